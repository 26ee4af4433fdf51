package netlab

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
)

// Sockets are created inside a namespace by switching one OS thread into
// it for the duration of the socket call (see within). A socket keeps the
// namespace it was created in, so the result can be used from any
// goroutine afterwards.
//
// Only the calling thread switches. Anything the wrapped call hands to
// other goroutines (the Go resolver does, for host names) runs in the
// process's own namespace, so callers should pass IP literals.

// Listen creates a listener inside the namespace of side. Use IP literal
// addresses (see the note on name resolution above).
func (l *Lab) Listen(side Side, network, address string) (net.Listener, error) {
	return l.ListenConfig(side, nil, network, address)
}

// ListenConfig is Listen with the caller's ListenConfig, for options such
// as SetMultipathTCP or Control. lc may be nil.
func (l *Lab) ListenConfig(side Side, lc *net.ListenConfig, network, address string) (net.Listener, error) {
	ns, err := l.nsName(side)
	if err != nil {
		return nil, err
	}
	if lc == nil {
		lc = &net.ListenConfig{}
	}
	return within(ns, func() (net.Listener, error) {
		return lc.Listen(context.Background(), network, address)
	})
}

// ListenPacket creates a packet socket (for example UDP) inside the
// namespace of side.
func (l *Lab) ListenPacket(side Side, network, address string) (net.PacketConn, error) {
	ns, err := l.nsName(side)
	if err != nil {
		return nil, err
	}
	return within(ns, func() (net.PacketConn, error) {
		var lc net.ListenConfig
		return lc.ListenPacket(context.Background(), network, address)
	})
}

// Dialer returns a dial function whose sockets are created, and connected,
// inside the namespace of side. d may be nil; otherwise it is copied, so
// its LocalAddr, Timeout, Control, MPTCP setting and so on apply, and
// later changes to *d do not.
func (l *Lab) Dialer(side Side, d *net.Dialer) func(ctx context.Context, network, address string) (net.Conn, error) {
	ns, nsErr := l.nsName(side)
	var dd net.Dialer
	if d != nil {
		dd = *d
	}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		if nsErr != nil {
			return nil, nsErr
		}
		return within(ns, func() (net.Conn, error) {
			return dd.DialContext(ctx, network, address)
		})
	}
}

// Exec runs a command inside the namespace of side via `ip netns exec` and
// returns its combined output. The error includes the command line and
// the output.
func (l *Lab) Exec(side Side, name string, args ...string) ([]byte, error) {
	ns, err := l.nsName(side)
	if err != nil {
		return nil, err
	}
	full := append([]string{"netns", "exec", ns, name}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netlab: %s: %w: %s", cmdLine("ip", full), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// nopCloser lets within run calls that produce no socket.
type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// writeFileIn writes a file (a per-namespace sysctl under /proc/sys/net)
// from a thread inside the namespace of side. /proc/sys/net shows the
// namespace of the thread that opens it, so no sysctl binary is needed.
func (l *Lab) writeFileIn(side Side, name, data string) error {
	ns, err := l.nsName(side)
	if err != nil {
		return err
	}
	return writeFileNS(ns, name, data)
}

// writeFileNS is writeFileIn for a namespace given by name, such as the router's.
func writeFileNS(ns, name, data string) error {
	_, err := within(ns, func() (nopCloser, error) {
		if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
			return nopCloser{}, fmt.Errorf("netlab: write %s in %s: %w", name, ns, err)
		}
		return nopCloser{}, nil
	})
	return err
}

// Open runs open inside the namespace of side and returns what it made: a TUN device, or any
// other socket or file the helpers above do not make. Only open's own thread is in the
// namespace; goroutines it starts run in the process's, which is right for what they do
// through the descriptors open made there.
func (l *Lab) Open(side Side, open func() (io.Closer, error)) (io.Closer, error) {
	ns, err := l.nsName(side)
	if err != nil {
		return nil, err
	}
	return within(ns, open)
}
