// Carrier negotiation: for every pair of ends, the listening side refuses or both ends use the
// same records (plain, datagrams, packets), and an answer that offers what was not asked is
// refused.

package rendr

import (
	"testing"

	"github.com/rendr-go/rendr/internal/handshake"
)

// TestNegotiation runs the carrier negotiation for every pair of ends: either the listening
// side refuses, or the dialing side takes the answer, and then both use the same records:
// plain exactly when asked and allowed, datagrams when both carriers move them, packets at
// both ends. An answer that offers what was not asked is refused by the dialing side.
func TestNegotiation(t *testing.T) {
	bools := []bool{false, true}
	for _, dDG := range bools {
		for _, dPk := range bools {
			for _, secure := range bools {
				for _, lDG := range bools {
					for _, lPk := range bools {
						for _, secureSrc := range bools {
							d := carrierCaps{datagrams: dDG, packets: dPk}
							lc := carrierCaps{datagrams: lDG, packets: lPk}
							asked := d.helloFlags(secure)
							got, ok := lc.replyFlags(asked, secureSrc)
							mustRefuse := dPk != lPk || (secure && !secureSrc)
							if ok == mustRefuse {
								t.Fatalf("dialer %+v secure %v, listener %+v secure source %v: agreed %v", d, secure, lc, secureSrc, ok)
							}
							if !ok {
								continue
							}
							if err := checkReply(asked, got); err != nil {
								t.Fatalf("dialer %+v secure %v, listener %+v: the dialer refused the answer: %v", d, secure, lc, err)
							}
							if plain := got&handshake.FlagPlain != 0; plain != secure {
								t.Fatalf("plain records %v, asked %v", plain, secure)
							}
							if dg := got&handshake.FlagDatagrams != 0; dg != (dDG && lDG) {
								t.Fatalf("datagrams %v with dialer %v and listener %v", dg, dDG, lDG)
							}
						}
					}
				}
			}
		}
	}
	for _, c := range []struct {
		name       string
		asked, got uint8
	}{
		{"plain not asked", 0, handshake.FlagPlain},
		{"plain asked, not given", handshake.FlagPlain, 0},
		{"datagrams not asked", 0, handshake.FlagDatagrams},
		{"packets at one end", handshake.FlagPackets, 0},
		{"packets at the other", 0, handshake.FlagPackets},
	} {
		if checkReply(c.asked, c.got) == nil {
			t.Errorf("%s: the dialing side took it", c.name)
		}
	}
}
