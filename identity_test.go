package rendr_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/internal/testkit"
	"github.com/rendr-go/rendr/l3"
)

var (
	tcpID = l3.Identity{Proto: l3.TCP, Src: netip.MustParseAddrPort("10.0.0.2:40000"), Dst: netip.MustParseAddrPort("192.0.2.1:443")}
	udpID = l3.Identity{Proto: l3.UDP, Src: netip.MustParseAddrPort("[2001:db8::2]:53535"), Dst: netip.MustParseAddrPort("[2001:db8:1::53]:53")}
)

// idLab is two in-memory paths under a Selector, whose listener takes identities when accept
// is true.
func idLab(t *testing.T, accept bool) *testkit.MemLab {
	return testkit.NewMemLabListen(t, rendr.Options{}, func(lc *rendr.ListenConfig) { lc.AcceptIdentities = accept },
		func(p map[string]*rendr.Target) *rendr.Target { return rendr.Selector("root", p["a"], p["b"]) },
		testkit.LinkSpec{Name: "a", AB: stGoodLink, BA: stGoodLink},
		testkit.LinkSpec{Name: "b", AB: stGoodLink, BA: stGoodLink})
}

// TestSynctestIdentityCarried: a stream flow and a packet flow opened with an L3 identity
// arrive with it, and report it on both sides; a flow opened without one reports none.
func TestSynctestIdentityCarried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := idLab(t, true)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dc, err := lb.D.DialIdentity(ctx, tcpID)
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		if _, err := dc.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		lc, err := lb.LN.AcceptContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer lc.Close()
		if dc.Identity() != tcpID || lc.Identity() != tcpID {
			t.Fatalf("identities: dialing side %v, listening side %v; want %v", dc.Identity(), lc.Identity(), tcpID)
		}
		dp, err := lb.D.DialPacketIdentity(ctx, udpID)
		if err != nil {
			t.Fatal(err)
		}
		defer dp.Close()
		if _, err := dp.Write([]byte("query")); err != nil {
			t.Fatal(err)
		}
		lp, err := lb.LN.AcceptPacket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer lp.Close()
		buf := make([]byte, 64)
		if n, err := lp.Read(buf); err != nil || string(buf[:n]) != "query" || lp.Identity() != udpID {
			t.Fatalf("packet flow: read %q, %v; identity %v, want %v", buf[:n], err, lp.Identity(), udpID)
		}
		plain, plainPeer := lb.Open()
		defer plain.Close()
		defer plainPeer.Close()
		if !plain.Identity().IsZero() || !plainPeer.Identity().IsZero() {
			t.Fatalf("a flow without identity reports %v and %v", plain.Identity(), plainPeer.Identity())
		}
	})
}

// TestSynctestIdentityRejected: a listener that takes no identities turns such a flow down:
// the dialing side reads and writes ErrRejected, the session counts it and goes on, and a
// flow without identity still opens. Identities that cannot be encoded are the caller's
// error.
func TestSynctestIdentityRejected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := idLab(t, false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dc, err := lb.D.DialIdentity(ctx, tcpID)
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		if _, err := dc.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if _, err := dc.Read(make([]byte, 1)); !errors.Is(err, rendr.ErrRejected) {
			t.Fatalf("Read: %v, want ErrRejected", err)
		}
		if _, err := dc.Write([]byte("more")); !errors.Is(err, rendr.ErrRejected) {
			t.Fatalf("Write: %v, want ErrRejected", err)
		}
		sess := lb.LN.Sessions()
		if len(sess) != 1 || sess[0].Rejected != 1 || sess[0].Violations != 0 {
			t.Fatalf("listener sessions %+v, want one with 1 rejected and no violation", sess)
		}
		c, p := lb.Open()
		c.Close()
		p.Close()

		if _, err := lb.D.DialIdentity(ctx, l3.Identity{}); err == nil || !strings.Contains(err.Error(), "DialContext") {
			t.Fatalf("the zero identity: %v, want an error that points at DialContext", err)
		}
		bad := tcpID
		bad.Src = netip.AddrPortFrom(bad.Src.Addr(), 0)
		if _, err := lb.D.DialPacketIdentity(ctx, bad); !errors.Is(err, l3.ErrInvalid) {
			t.Fatalf("port 0: %v, want l3.ErrInvalid", err)
		}
	})
}

// TestSynctestIdentitySurvivesPathLoss: the path that carries a flow's OPEN, its identity and
// its first bytes dies before any of it arrives. The OPEN goes again on the other path, and
// the listener accepts the flow with its identity and every byte.
func TestSynctestIdentitySurvivesPathLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := idLab(t, true)
		first, firstPeer := lb.Open() // the session, up on both paths
		defer first.Close()
		defer firstPeer.Close()
		lb.MustWait("both paths up", 10*time.Second, lb.AllUp)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dc, err := lb.D.DialIdentity(ctx, tcpID)
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		data := bytes.Repeat([]byte("rendr"), 20000)
		if _, err := dc.Write(data[:1000]); err != nil {
			t.Fatal(err)
		}
		// Nothing has crossed the link yet (a 2ms delay each way, and no time passed).
		lb.Paths[lb.Active()].Live().Kill(false)
		go func() {
			dc.Write(data[1000:])
			dc.CloseWrite()
		}()
		lc, err := lb.LN.AcceptContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer lc.Close()
		if lc.Identity() != tcpID {
			t.Fatalf("identity %v after the path died, want %v", lc.Identity(), tcpID)
		}
		got, err := io.ReadAll(lc)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read %d of %d bytes (%v), or they differ", len(got), len(data), err)
		}
		if st := lb.Status(); st.Migrations < 2 {
			t.Fatalf("the flow did not move: %s", testkit.Describe(st))
		}
	})
}

// TestKeyText: keys go to text and back (base64, as wg writes them); a private key that is not
// 32 bytes of base64, or is all zero, is refused with a message that says how to make one.
func TestKeyText(t *testing.T) {
	k := rendr.MustNewKey()
	b, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	var back rendr.PrivateKey
	if err := back.UnmarshalText(b); err != nil || back != k {
		t.Fatalf("private key back: %v", err)
	}
	if p, err := rendr.ParsePrivateKey(" " + string(b) + "\n"); err != nil || p != k {
		t.Fatalf("with white space around it: %v", err)
	}
	pb, _ := k.Public().MarshalText()
	var pub rendr.PublicKey
	if err := pub.UnmarshalText(pb); err != nil || pub != k.Public() {
		t.Fatalf("public key back: %v", err)
	}
	for _, bad := range []string{"", "abc", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", strings.Repeat("A", 44)} {
		if _, err := rendr.ParsePrivateKey(bad); err == nil {
			t.Errorf("%q taken as a private key", bad)
		}
	}
	if _, err := rendr.ParsePrivateKey("abc"); err == nil || !strings.Contains(err.Error(), "genkey") {
		t.Errorf("the error does not say how to make a key: %v", err)
	}
}

// TestSynctestConnReset: Reset abandons a flow both ways: the peer reads ErrReset (not
// io.EOF) and its writes fail with ErrStopped; this side's calls return ErrClosed.
func TestSynctestConnReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := idLab(t, false)
		dc, lc := lb.Open()
		defer lc.Close()
		if _, err := dc.Write([]byte("partial")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(lc, make([]byte, 7)); err != nil {
			t.Fatal(err)
		}
		if err := dc.Reset(); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(lc); !errors.Is(err, rendr.ErrReset) {
			t.Fatalf("the peer read %v after Reset, want ErrReset", err)
		}
		var werr error
		for range 100 {
			if _, werr = lc.Write([]byte("x")); werr != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !errors.Is(werr, rendr.ErrStopped) {
			t.Fatalf("the peer's write after Reset: %v, want ErrStopped", werr)
		}
		if _, err := dc.Write([]byte("y")); !errors.Is(err, rendr.ErrClosed) {
			t.Fatalf("Write after Reset: %v, want ErrClosed", err)
		}
	})
}

// TestSynctestDialerConnect: Connect brings the session up without a flow, so the paths are
// up before the first Dial; again, it returns at once; on a closed Dialer it says so.
func TestSynctestDialerConnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lb := idLab(t, false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if st := lb.Status(); len(st.Paths) != 0 {
			t.Fatalf("paths before Connect: %s", testkit.Describe(st))
		}
		if err := lb.D.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		lb.MustWait("both paths up", 10*time.Second, lb.AllUp)
		if st := lb.Status(); st.Flows != 0 {
			t.Fatalf("Connect opened %d flows", st.Flows)
		}
		if err := lb.D.Connect(ctx); err != nil {
			t.Fatalf("Connect again: %v", err)
		}
		lb.D.Close()
		if err := lb.D.Connect(ctx); !errors.Is(err, rendr.ErrClosed) {
			t.Fatalf("Connect on a closed Dialer: %v, want ErrClosed", err)
		}
	})
}
