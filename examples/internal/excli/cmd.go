package excli

// A program's life: its subcommands, the signals that stop it, and the accept loop of a side
// that takes the application's connections.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// ErrUsage is what a command line that names no subcommand, or a flag set that cannot be
// parsed, fails with: Main prints the usage after it.
var ErrUsage = errors.New("usage")

// Main runs a program: run gets the command line without the program's name, and a context
// that ends on SIGINT or SIGTERM (a clean stop: run returns nil then). A failure is printed
// as "prog: error", followed by usage when it is ErrUsage, and the program exits with status 1.
func Main(prog, usage string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
		if errors.Is(err, ErrUsage) {
			fmt.Fprintln(os.Stderr, usage)
		}
		os.Exit(1)
	}
}

// Dispatch runs the subcommand args[0]: genkey and pubkey here, any other from cmds, which is
// given the arguments after its name. A command line naming none of them is ErrUsage.
func Dispatch(args []string, stdin io.Reader, stdout io.Writer, cmds map[string]func(args []string) error) error {
	if len(args) == 0 {
		return ErrUsage
	}
	switch args[0] {
	case "genkey":
		return GenKey(stdout)
	case "pubkey":
		return PubKey(stdin, stdout)
	}
	if cmd, ok := cmds[args[0]]; ok {
		return cmd(args[1:])
	}
	return ErrUsage
}

// Serve accepts connections on ln until ctx ends, each given to handle in a goroutine of its
// own, and closed when ctx ends if handle has not returned by then. Then it closes ln, calls stop, which must make every handler return (closing the
// program's rendr.Dialer ends every flow, and with it every splice), and waits for them. It
// returns nil when ctx ended, or the error that stopped it accepting.
func Serve(ctx context.Context, ln net.Listener, handle func(net.Conn), stop func()) error {
	unhook := context.AfterFunc(ctx, func() { ln.Close() })
	defer unhook()
	var wg sync.WaitGroup
	var err error
	for {
		conn, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		wg.Go(func() {
			unhook := context.AfterFunc(ctx, func() { conn.Close() })
			defer unhook()
			handle(conn)
		})
	}
	ln.Close()
	stop()
	wg.Wait()
	return err
}
