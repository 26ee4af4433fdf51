package main

// The SOCKS5 protocol (RFC 1928) as far as this proxy speaks it: the method negotiation, the
// username/password sub-negotiation (RFC 1929), a CONNECT request and the reply. Every read is
// of an exact length, so nothing the application sends after its request is consumed here.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

const (
	socksVersion = 5

	methodNone     = 0x00
	methodUserPass = 0x02
	methodNoneOK   = 0xff // no acceptable method

	userPassVersion = 1

	cmdConnect      = 0x01
	cmdBind         = 0x02
	cmdUDPAssociate = 0x03

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// Reply codes (RFC 1928, section 6).
const (
	repSucceeded          = 0x00
	repGeneralFailure     = 0x01
	repNotAllowed         = 0x02
	repNetworkUnreachable = 0x03
	repHostUnreachable    = 0x04
	repConnectionRefused  = 0x05
	repTTLExpired         = 0x06
	repCommandUnsupported = 0x07
	repAddrUnsupported    = 0x08
)

// request is a client's request: a destination by address or by name.
type request struct {
	cmd  byte
	addr netip.Addr // valid for an IPv4 or IPv6 destination
	name string     // set for a domain name
	port uint16
}

// String is the destination as host:port, for logs.
func (r request) String() string {
	if r.name != "" {
		return fmt.Sprintf("%s:%d", r.name, r.port)
	}
	return netip.AddrPortFrom(r.addr, r.port).String()
}

// replyError is a request the proxy turns down with a reply of its own: code is what to
// answer, since the request was read far enough to say why.
type replyError struct {
	code byte
	msg  string
}

func (e *replyError) Error() string { return "socks5: " + e.msg }

// errMalformed is input that is not SOCKS5: the connection is closed without a reply, as the
// client does not speak the protocol.
var errMalformed = errors.New("socks5: malformed message")

// readGreeting reads the client's method negotiation and returns the methods it offers.
func readGreeting(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != socksVersion {
		return nil, fmt.Errorf("%w: version %d, not 5", errMalformed, hdr[0])
	}
	if hdr[1] == 0 {
		return nil, fmt.Errorf("%w: no methods offered", errMalformed)
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, err
	}
	return methods, nil
}

// chooseMethod picks the method to use from those offered: username/password when the proxy
// requires it, no authentication otherwise; methodNoneOK when the client offers neither.
func chooseMethod(offered []byte, needAuth bool) byte {
	want := byte(methodNone)
	if needAuth {
		want = methodUserPass
	}
	if bytes.IndexByte(offered, want) >= 0 {
		return want
	}
	return methodNoneOK
}

// readUserPass reads the username/password sub-negotiation (RFC 1929).
func readUserPass(r io.Reader) (user, pass string, err error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", "", err
	}
	if b[0] != userPassVersion {
		return "", "", fmt.Errorf("%w: username/password version %d, not 1", errMalformed, b[0])
	}
	u, err := readShortString(r)
	if err != nil {
		return "", "", err
	}
	p, err := readShortString(r)
	if err != nil {
		return "", "", err
	}
	return u, p, nil
}

// readShortString reads a length byte and that many bytes.
func readShortString(r io.Reader) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// readRequest reads a request. A request of an unknown address type is a *replyError (the
// rest of it cannot be read); so is a domain name that is empty or holds bytes no host name
// has. The command is returned as it came: the caller decides which ones it serves.
func readRequest(r io.Reader) (request, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return request{}, err
	}
	if hdr[0] != socksVersion {
		return request{}, fmt.Errorf("%w: request version %d, not 5", errMalformed, hdr[0])
	}
	req := request{cmd: hdr[1]}
	switch hdr[3] {
	case atypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return request{}, err
		}
		req.addr = netip.AddrFrom4(a)
	case atypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return request{}, err
		}
		// An IPv4-mapped address is the IPv4 destination it maps.
		req.addr = netip.AddrFrom16(a).Unmap()
	case atypDomain:
		name, err := readShortString(r)
		if err != nil {
			return request{}, err
		}
		req.name = name
	default:
		return request{}, &replyError{repAddrUnsupported, fmt.Sprintf("address type %d", hdr[3])}
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return request{}, err
	}
	req.port = uint16(port[0])<<8 | uint16(port[1])
	if hdr[3] == atypDomain {
		// Some clients send an address literal as a name; it is that address.
		if a, err := netip.ParseAddr(req.name); err == nil && a.Zone() == "" {
			req.addr, req.name = a.Unmap(), ""
		} else if err := checkName(req.name); err != nil {
			return request{}, &replyError{repHostUnreachable, err.Error()}
		}
	}
	return req, nil
}

// checkName accepts what a resolver could look up: 1 to 255 bytes of printable ASCII without
// spaces. The far side's resolver judges the rest.
func checkName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("a host name of %d bytes", len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("a host name with byte %#x", c)
		}
	}
	return nil
}

// appendReply appends a reply with code and the bound address bnd (the zero AddrPort is sent
// as 0.0.0.0:0).
func appendReply(b []byte, code byte, bnd netip.AddrPort) []byte {
	b = append(b, socksVersion, code, 0)
	a := bnd.Addr().Unmap()
	switch {
	case a.Is4():
		v := a.As4()
		b = append(b, atypIPv4)
		b = append(b, v[:]...)
	case a.Is6():
		v := a.As16()
		b = append(b, atypIPv6)
		b = append(b, v[:]...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
	}
	return append(b, byte(bnd.Port()>>8), byte(bnd.Port()))
}
