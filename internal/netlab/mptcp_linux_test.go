package netlab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// With MPTCP on, one connection dialled on path 0 gains a subflow from path 1's client
// address once data flows, and that subflow carries data across path 1 whether the path is a
// plain veth pair or goes through a delay node. The subflow connects to path 0's server
// address, the one the first subflow used, so on a delayed path the client and the router
// must both send a packet for another subnet's address on path 1's own links.
func TestMPTCPSubflowPerPath(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/mptcp/enabled"); err != nil {
		t.Skip("kernel without MPTCP:", err)
	}
	const oneWay = 5 * time.Millisecond
	for _, tc := range []struct {
		name  string
		delay []DelayConfig
	}{
		{"veth", nil},
		{"delay", []DelayConfig{{Delay: oneWay}, {Delay: oneWay}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, Config{Paths: 2, Delay: tc.delay, Name: "nlt-mptcp"})
			if err := l.EnableMPTCP(); err != nil {
				t.Fatal(err)
			}
			port, stop := mptcpFlow(t, l)
			defer stop()

			var sf map[netip.Addr]subflow
			waitFor(t, l, "one established subflow per path, each with data acknowledged", func() (bool, string) {
				var err error
				sf, err = establishedSubflows(l, port)
				if err != nil {
					return false, err.Error()
				}
				state := fmt.Sprintf("subflows by local address %v\n%s", sf, mptcpState(l))
				if len(sf) != l.Paths() {
					return false, state
				}
				for i := range l.Paths() {
					if s, ok := sf[l.ClientAddr(i)]; !ok || s.acked == 0 {
						return false, state
					}
				}
				return true, state
			})
			stop()
			for local, s := range sf {
				if s.peer != l.ServerAddr(0) {
					t.Errorf("subflow from %s goes to %s, want the first subflow's peer %s", local, s.peer, l.ServerAddr(0))
				}
			}
			if tc.delay == nil {
				return
			}
			// What a subflow had acknowledged when it was read crossed its path's node
			// before, so the node's counters, read later, cover it if the subflow kept
			// to its own path.
			for i := range l.Paths() {
				st, acked := delayStats(t, l, i), sf[l.ClientAddr(i)].acked
				if st.ToServer.ForwardedBytes < acked || st.ToClient.Forwarded == 0 {
					t.Errorf("path %d: delay node forwarded %d bytes to the server and %d packets to the client; "+
						"its subflow had %d bytes acknowledged", i, st.ToServer.ForwardedBytes, st.ToClient.Forwarded, acked)
				}
			}
		})
	}
}

// mptcpFlow opens one MPTCP connection from path 0's client address to a sink at path 0's
// server address and keeps writing into it, for at most 1 GiB or 20 s, until stop is called.
// It returns the sink's port.
func mptcpFlow(t *testing.T, l *Lab) (port int, stop func()) {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := l.ListenConfig(Server, &lc, "tcp", netip.AddrPortFrom(l.ServerAddr(0), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.Copy(io.Discard, c)
	})
	d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(l.ClientAddr(0), 0))}
	d.SetMultipathTCP(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.Dialer(Client, d)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		wg.Wait()
		t.Fatal(err)
	}
	if mp, err := c.(*net.TCPConn).MultipathTCP(); err != nil || !mp {
		t.Errorf("client connection: MultipathTCP = %v, %v", mp, err)
	}
	done := make(chan struct{})
	wg.Go(func() {
		const chunk, chunks = 64 << 10, 16384
		buf := make([]byte, chunk)
		c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for range chunks {
			select {
			case <-done:
				return
			default:
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			// Closing both ends unblocks a writer waiting for window, and the sink.
			c.Close()
			ln.Close()
			wg.Wait()
		})
	}
	return ln.Addr().(*net.TCPAddr).Port, stop
}

// subflow is what ss shows of one TCP subflow of an MPTCP connection.
type subflow struct {
	peer  netip.Addr
	acked uint64 // bytes_acked
}

func (s subflow) String() string { return fmt.Sprintf("to %s, %d bytes acknowledged", s.peer, s.acked) }

// establishedSubflows returns the established TCP subflows towards port in the client
// namespace, by local address.
func establishedSubflows(l *Lab, port int) (map[netip.Addr]subflow, error) {
	out, err := l.Exec(Client, "ss", "-Htni", "state", "established", "dport", "=", fmt.Sprintf(":%d", port))
	if err != nil {
		return nil, err
	}
	sf := map[netip.Addr]subflow{}
	var cur netip.Addr
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if strings.HasPrefix(line, "\t") || strings.HasPrefix(line, " ") {
			// The -i line of the socket above.
			for _, kv := range f {
				if v, ok := strings.CutPrefix(kv, "bytes_acked:"); ok && cur.IsValid() {
					n, err := strconv.ParseUint(v, 10, 64)
					if err != nil {
						return nil, fmt.Errorf("ss line %q: %w", line, err)
					}
					s := sf[cur]
					s.acked = n
					sf[cur] = s
				}
			}
			continue
		}
		// "recv-q send-q local:port peer:port"; a socket bound to a device shows its
		// local address as addr%dev:port.
		if len(f) < 4 {
			return nil, fmt.Errorf("ss line %q: too few fields", line)
		}
		local, peer := f[2], f[3]
		if i, j := strings.IndexByte(local, '%'), strings.LastIndexByte(local, ':'); i >= 0 && j > i {
			local = local[:i] + local[j:]
		}
		la, err := netip.ParseAddrPort(local)
		if err != nil {
			return nil, fmt.Errorf("ss line %q: %w", line, err)
		}
		pa, err := netip.ParseAddrPort(peer)
		if err != nil {
			return nil, fmt.Errorf("ss line %q: %w", line, err)
		}
		cur = la.Addr()
		if _, dup := sf[cur]; dup {
			return nil, fmt.Errorf("two subflows from %s:\n%s", cur, out)
		}
		sf[cur] = subflow{peer: pa.Addr()}
	}
	return sf, nil
}

// mptcpState describes what the kernel did with MPTCP in the client, for failures.
func mptcpState(l *Lab) string {
	var b strings.Builder
	for _, cmd := range [][]string{
		{"ip", "mptcp", "endpoint", "show"},
		{"ss", "-Htnai"},
		{"nstat", "-asz", "MPTcpExt*"},
		{"ip", "neigh", "show"},
	} {
		out, err := l.Exec(Client, cmd[0], cmd[1:]...)
		fmt.Fprintf(&b, "client$ %s: %v\n%s", strings.Join(cmd, " "), err, out)
	}
	if ns := l.RouterNS(); ns != "" {
		out, err := run("", "ip", "-n", ns, "neigh", "show")
		fmt.Fprintf(&b, "router$ ip neigh show: %v\n%s", err, out)
	}
	return b.String()
}
