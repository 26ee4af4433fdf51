package tun

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/l3"
)

// noDialer opens nothing: these tests send no packet.
type noDialer struct{}

func (noDialer) DialIdentity(context.Context, l3.Identity) (*rendr.Conn, error) {
	return nil, errors.New("no far side here")
}

func (noDialer) DialPacketIdentity(context.Context, l3.Identity) (*rendr.PacketConn, error) {
	return nil, errors.New("no far side here")
}

// TestMemoryProfiles: MemorySmall lowers every bound left zero, one set explicitly stays, and
// an unknown profile is refused with an error that names the choices.
func TestMemoryProfiles(t *testing.T) {
	start := func(c Config) (*Ingress, error) {
		c.Device, c.Dialer = tuntest.NewChannelTUN().TUN(), noDialer{}
		return Start(c)
	}
	in, err := start(Config{Memory: MemorySmall, MaxUDP: 100})
	if err != nil {
		t.Fatal(err)
	}
	c := in.cfg
	in.Close()
	if c.MaxTCP != 512 || c.MaxPending != 64 || c.MaxPendingPerSource != 16 || c.MaxUDP != 100 ||
		c.TCP != (TCPBuffers{SendDefault: 64 << 10, SendMax: 1 << 20, RecvDefault: 64 << 10, RecvMax: 1 << 20}) {
		t.Errorf("MemorySmall gave %+v", c)
	}
	in, err = start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	c = in.cfg
	in.Close()
	if c.MaxTCP != 4096 || c.MaxUDP != 4096 || c.TCP.RecvMax != 8<<20 {
		t.Errorf("the defaults are %+v", c)
	}
	if _, err := start(Config{Memory: 7}); err == nil || !strings.Contains(err.Error(), "MemorySmall") {
		t.Errorf("an unknown profile: %v", err)
	}
}
