package udpflow

import (
	"errors"
	"testing"

	"github.com/rendr-go/rendr/transport"
)

// TestAnswerBoundedByHello: before its address is proven, the listener's answer to a first
// datagram may be at most three times that datagram's size, so a forged source address cannot
// be sent more than it is credited with.
func TestAnswerBoundedByHello(t *testing.T) {
	l := listen(t)
	d := dial(t, l.Addr())
	write(t, d, []byte("client hello")) // padded to 1200 bytes on the wire
	c := accept(t, l)
	expectRead(t, c, []byte("client hello"))
	if _, err := c.Write(make([]byte, 3*helloSize)); !errors.Is(err, transport.ErrDatagramTooLarge) {
		t.Fatalf("a %d-byte answer to a %d-byte first datagram: %v", 3*helloSize, helloSize, err)
	}
	write(t, c, make([]byte, 3*helloSize-headerSize)) // exactly three times: allowed
}
