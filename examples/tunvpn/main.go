// Command tunvpn is the reference VPN built on rendr: every program on the client reaches the
// networks behind the server through a TUN, over all the client's uplinks at once. A TCP
// connection survives the loss of the uplink it was using (its bytes, not its packets, cross
// the tunnel), and one download can use every uplink (policy "bond").
//
//	tunvpn genkey > client.key            a private key
//	tunvpn pubkey < client.key            its public key, for the other side's file
//	tunvpn server -c server.toml          the server (Linux)
//	tunvpn client -c client.toml          the client (Linux, root: it makes a TUN and routes)
//	tunvpn status [-s /run/tunvpn.sock]   paths, flows and recent migrations of a running side
//
// README.md beside this file walks through a two-namespace set-up.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/rendr-go/rendr/examples/internal/excli"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tunvpn:", err)
		if err == errUsage {
			fmt.Fprintln(os.Stderr, usage)
		}
		os.Exit(1)
	}
}

const usage = `usage:
  tunvpn genkey
  tunvpn pubkey < private-key
  tunvpn server -c server.toml [-v]
  tunvpn client -c client.toml [-v]
  tunvpn status [-s socket]`

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	cfgPath := fs.String("c", "", "configuration file")
	sock := fs.String("s", defaultStatus, "status socket")
	verbose := fs.Bool("v", false, "log rendr's debug events")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "genkey":
		return excli.GenKey(stdout)
	case "pubkey":
		return excli.PubKey(stdin, stdout)
	case "server":
		c, err := loadServer(*cfgPath)
		if err != nil {
			return err
		}
		return runServer(ctx, c, log)
	case "client":
		c, err := loadClient(*cfgPath)
		if err != nil {
			return err
		}
		return runClient(ctx, c, log)
	case "status":
		r, err := readStatus(*sock)
		if err != nil {
			return err
		}
		printStatus(stdout, r)
	default:
		return errUsage
	}
	return nil
}
