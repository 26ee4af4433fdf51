// The policies, packet flows, status, migrations and graph changes, run as examples. Each
// waits for what it shows (a path up, a move reported), never for a length of time.

package rendr_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/l3"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/transport/tcp"
)

// A Selector sends on its primary while the primary is up. When the primary's link fails,
// traffic moves to the backup with nothing lost, and comes back once the primary has been up
// again for a while (Options.RecoverDwell).
func ExampleSelector() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	l1, _ := tcp.Listen("127.0.0.1:0")
	l2, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	// The primary's dial function hands its first carrier over, so that the example can cut
	// the link under it.
	cut := make(chan net.Conn, 1)
	fiber := func(ctx context.Context) (net.Conn, error) {
		c, err := tcp.Dialer(l1.Addr().String())(ctx)
		if err == nil {
			select {
			case cut <- c:
			default:
			}
		}
		return c, err
	}
	moves := make(chan status.Migration, 16)
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Selector("uplinks",
			rendr.Path("fiber", fiber),
			rendr.Path("lte", tcp.Dialer(l2.Addr().String()), rendr.Backup()),
		),
		Options: rendr.Options{OnMigrate: func(m status.Migration) {
			select { // the callback runs on rendr's engine: it must not block
			case moves <- m:
			default:
			}
		}},
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	lc, err := ln.AcceptContext(ctx)
	if err != nil {
		panic(err)
	}
	defer lc.Close()

	// Traffic starts on the first path up: wait until it is on the primary, with the backup
	// up beside it.
	for m := range moves {
		if m.To == "fiber" {
			break
		}
	}
	lteUp := func(p status.Path) bool { return p.Name == "lte" && p.State == status.Up }
	for ctx.Err() == nil && !slices.ContainsFunc(d.Status().Paths, lteUp) {
		time.Sleep(10 * time.Millisecond)
	}

	c.Write([]byte("written before the cut, "))
	(<-cut).Close()
	c.Write([]byte("and after"))
	c.CloseWrite()
	got, _ := io.ReadAll(lc)
	fmt.Println(string(got))
	for range 2 {
		m := <-moves
		fmt.Printf("%s -> %s: %s\n", m.From, m.To, m.Cause)
	}
	// Output:
	// written before the cut, and after
	// fiber -> lte: death
	// lte -> fiber: recovery
}

// A Race sends every byte on every path; the receiver keeps the first copy, so the flow's
// latency is that of the best path at each moment.
func ExampleRace() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	l1, _ := tcp.Listen("127.0.0.1:0")
	l2, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Race("both",
			rendr.Path("wifi", tcp.Dialer(l1.Addr().String())),
			rendr.Path("lte", tcp.Dialer(l2.Addr().String())),
		),
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	lc, err := ln.AcceptContext(ctx)
	if err != nil {
		panic(err)
	}
	defer lc.Close()

	// The first path up carries traffic at once; the other joins the race when it is up.
	active := func() (names []string) {
		for _, p := range c.Paths() {
			if p.Active {
				names = append(names, p.Name)
			}
		}
		slices.Sort(names)
		return names
	}
	for ctx.Err() == nil && len(active()) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("racing on", active())

	c.Write([]byte("sent on both paths, read once"))
	c.CloseWrite()
	got, _ := io.ReadAll(lc)
	fmt.Println(string(got))
	// Output:
	// racing on [lte wifi]
	// sent on both paths, read once
}

// A Bond spreads one flow's bytes across its paths, so their throughputs add up; the receiver
// reads them in order.
func ExampleBond() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	l1, _ := tcp.Listen("127.0.0.1:0")
	l2, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Bond("pair",
			rendr.Path("eth0", tcp.Dialer(l1.Addr().String())),
			rendr.Path("eth1", tcp.Dialer(l2.Addr().String())),
		),
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Connect starts the session; wait until both paths are up, so that both carry the flow.
	if err := d.Connect(ctx); err != nil {
		panic(err)
	}
	bothUp := func() bool {
		n := 0
		for _, p := range d.Status().Paths {
			if p.State == status.Up && p.Active {
				n++
			}
		}
		return n == 2
	}
	for ctx.Err() == nil && !bothUp() {
		time.Sleep(10 * time.Millisecond)
	}

	c, err := d.DialContext(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	lc, err := ln.AcceptContext(ctx)
	if err != nil {
		panic(err)
	}
	defer lc.Close()

	data := make([]byte, 1<<20)
	rand.Read(data)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		c.Write(data) // blocks while the receiver's window is full
		c.CloseWrite()
	}()
	got, _ := io.ReadAll(lc)
	<-sent
	fmt.Println(len(got), "bytes, intact:", sha256.Sum256(got) == sha256.Sum256(data))
	// Output: 1048576 bytes, intact: true
}

// A packet flow carries datagrams instead of a byte stream, over the same session and paths:
// each Write is one datagram, sent once and delivered at most once. Closing is reliable: the
// peer reads io.EOF after the datagrams that arrived.
func ExampleDialer_DialPacket() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	src, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, src)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("only", tcp.Dialer(src.Addr().String()))})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := d.DialPacket(ctx)
	if err != nil {
		panic(err)
	}
	lpc, err := ln.AcceptPacket(ctx)
	if err != nil {
		panic(err)
	}
	defer lpc.Close()

	buf := make([]byte, rendr.MaxDatagram)
	for _, msg := range []string{"ping 1", "ping 2"} {
		pc.Write([]byte(msg))
		n, _, _ := lpc.ReadFrom(buf) // the listening side answers each datagram
		lpc.Write(bytes.Replace(buf[:n], []byte("ping"), []byte("pong"), 1))
		n, _ = pc.Read(buf)
		fmt.Println(msg, "->", string(buf[:n]))
	}
	pc.Close()
	_, _, err = lpc.ReadFrom(buf)
	fmt.Println(err)
	// Output:
	// ping 1 -> pong 1
	// ping 2 -> pong 2
	// EOF
}

// Status lists the session's paths: their state, tier and which carries traffic, with their
// round trip, loss and byte counts (not printed here: they vary from run to run).
func ExampleConn_Status() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	l1, _ := tcp.Listen("127.0.0.1:0")
	l2, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Selector("uplinks",
			rendr.Path("fiber", tcp.Dialer(l1.Addr().String())),
			rendr.Path("lte", tcp.Dialer(l2.Addr().String()), rendr.Backup()),
		),
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	// Wait for both paths, and for traffic on the primary (the backup may have come up first).
	settled := func() bool {
		for _, p := range c.Status().Paths {
			if p.State != status.Up || p.Active != (p.Tier == 0) {
				return false
			}
		}
		return true
	}
	for ctx.Err() == nil && !settled() {
		time.Sleep(10 * time.Millisecond)
	}

	s := c.Status()
	slices.SortFunc(s.Paths, func(a, b status.Path) int { return strings.Compare(a.Name, b.Name) })
	for _, p := range s.Paths {
		fmt.Printf("%s: %s, tier %d, active %t\n", p.Name, p.State, p.Tier, p.Active)
	}
	fmt.Println("flows:", s.Flows)
	// Output:
	// fiber: up, tier 0, active true
	// lte: up, tier 1, active false
	// flows: 1
}

// Select makes one target alone carry traffic, whatever the policy would pick, and
// Select("") hands traffic back to the policy. Options.OnMigrate reports each move with its
// cause.
func ExampleDialer_Select() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	l1, _ := tcp.Listen("127.0.0.1:0")
	l2, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	moves := make(chan status.Migration, 16)
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Selector("uplinks",
			rendr.Path("fiber", tcp.Dialer(l1.Addr().String())),
			rendr.Path("lte", tcp.Dialer(l2.Addr().String()), rendr.Backup()),
		),
		Options: rendr.Options{OnMigrate: func(m status.Migration) {
			select { // the callback runs on rendr's engine: it must not block
			case moves <- m:
			default:
			}
		}},
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		panic(err)
	}
	// Traffic starts on the first path up: wait until it is on the primary, with the backup
	// up beside it.
	for m := range moves {
		if m.To == "fiber" {
			break
		}
	}
	lteUp := func(p status.Path) bool { return p.Name == "lte" && p.State == status.Up }
	for ctx.Err() == nil && !slices.ContainsFunc(d.Status().Paths, lteUp) {
		time.Sleep(10 * time.Millisecond)
	}

	for _, name := range []string{"lte", ""} {
		if err := d.Select(name); err != nil {
			panic(err)
		}
		m := <-moves
		fmt.Printf("Select(%q): %s -> %s, %s\n", name, m.From, m.To, m.Cause)
	}
	// Output:
	// Select("lte"): fiber -> lte, control
	// Select(""): lte -> fiber, control
}

// The graph of a running session can change: Add a path, and Remove one; traffic moves off a
// removed path at once, and its flows carry on.
func ExampleDialer_Add() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	l1, _ := tcp.Listen("127.0.0.1:0")
	l2, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, l1, l2)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{
		Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Selector("uplinks", rendr.Path("wifi", tcp.Dialer(l1.Addr().String()))),
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Connect(ctx); err != nil {
		panic(err)
	}
	// paths lists the session's paths that are up, and the one carrying traffic.
	paths := func() (up []string, active string) {
		for _, p := range d.Status().Paths {
			if p.State == status.Up {
				up = append(up, p.Name)
			}
			if p.Active {
				active = p.Name
			}
		}
		return up, active
	}

	// The host got a second uplink: a new path under the same Selector.
	if err := d.Add("uplinks", rendr.Path("ethernet", tcp.Dialer(l2.Addr().String()))); err != nil {
		panic(err)
	}
	for up, _ := paths(); ctx.Err() == nil && len(up) < 2; up, _ = paths() {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println(paths())

	// The Wi-Fi is gone for good: traffic is on the Ethernet from now on.
	if err := d.Remove("wifi"); err != nil {
		panic(err)
	}
	for up, active := paths(); ctx.Err() == nil && (len(up) > 1 || active != "ethernet"); up, active = paths() {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println(paths())
	// Output:
	// [wifi ethernet] wifi
	// [ethernet] ethernet
}

// A flow can stand for one IP connection of the host (a TUN ingress takes them so): it
// carries the connection's identity, and a listener with an Egress makes that connection
// itself. WaitAccepted says whether it could.
func ExampleDialer_DialIdentity() {
	// Where the connections go: a TCP echo server.
	dest, _ := net.Listen("tcp", "127.0.0.1:0")
	var wg sync.WaitGroup
	wg.Go(func() {
		conn, err := dest.Accept()
		if err != nil {
			return
		}
		io.Copy(conn, conn)
		conn.Close()
	})
	defer wg.Wait()
	defer dest.Close()

	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	src, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()},
		// Dial the destinations from the listener's host, loopback only.
		Egress: rendr.AllowEgress([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, rendr.DirectEgress),
	}, src)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("uplink", tcp.Dialer(src.Addr().String()))})
	if err != nil {
		panic(err)
	}
	defer d.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := netip.MustParseAddrPort("10.0.0.2:40000") // the application that connected
	c, err := d.DialIdentity(ctx, l3.Identity{Proto: l3.TCP, Src: client, Dst: netip.MustParseAddrPort(dest.Addr().String())})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	if err := c.WaitAccepted(ctx); err != nil { // the listener could not connect
		panic(err)
	}
	c.Write([]byte("echoed by the destination"))
	c.CloseWrite()
	got, _ := io.ReadAll(c)
	fmt.Println(string(got))

	// A destination outside the Egress's prefixes is turned down.
	c2, err := d.DialIdentity(ctx, l3.Identity{Proto: l3.TCP, Src: client, Dst: netip.MustParseAddrPort("192.0.2.1:80")})
	if err != nil {
		panic(err)
	}
	defer c2.Close()
	err = c2.WaitAccepted(ctx)
	fmt.Println("turned down:", errors.Is(err, rendr.ErrRejected))
	// Output:
	// echoed by the destination
	// turned down: true
}
