package main

// Names are resolved on the server's side, as SOCKS5 users expect of a proxy (curl
// --socks5-hostname): a name may exist only in the server's network, and the client's DNS
// should not learn where its user goes. A flow's L3 identity carries addresses, not names, so
// the client asks first: it opens a plain flow (no identity) with the name, the server answers
// with the addresses its resolver gives, and the client then opens the connection's flow with
// an identity for each address in turn, as any dialer walks a name's addresses. The
// destinations still go through the server's egress, and so its allow-list: the answer to a
// lookup opens nothing.
//
// On the flow, the request is a version byte (1), a length byte and the name; the answer a
// status byte (resolveOK, resolveNotFound, resolveFailed), a count byte, and each address as a
// length byte (4 or 16) and its bytes.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
)

const (
	resolveVersion = 1

	resolveOK       = 0
	resolveNotFound = 1 // the name does not exist
	resolveFailed   = 2 // the resolver failed (no answer, a server failure)

	// maxResolved bounds the addresses in an answer.
	maxResolved = 16
	// maxAnswer is the longest answer.
	maxAnswer = 2 + maxResolved*17
)

// errNotFound is a name the server's resolver says does not exist.
var errNotFound = errors.New("socks5: no such host at the server")

// errResolveFailed is a lookup the server's resolver could not finish.
var errResolveFailed = errors.New("socks5: the server's resolver failed")

// appendResolveRequest appends the request for name.
func appendResolveRequest(b []byte, name string) []byte {
	b = append(b, resolveVersion, byte(len(name)))
	return append(b, name...)
}

// readResolveRequest reads a request and returns its name.
func readResolveRequest(r io.Reader) (string, error) {
	var v [1]byte
	if _, err := io.ReadFull(r, v[:]); err != nil {
		return "", err
	}
	if v[0] != resolveVersion {
		return "", fmt.Errorf("socks5: resolve request version %d, not %d", v[0], resolveVersion)
	}
	name, err := readShortString(r)
	if err != nil {
		return "", err
	}
	if err := checkName(name); err != nil {
		return "", err
	}
	return name, nil
}

// appendAnswer appends the answer: status, and the addresses when it is resolveOK (at most
// maxResolved of them).
func appendAnswer(b []byte, status byte, addrs []netip.Addr) []byte {
	addrs = addrs[:min(len(addrs), maxResolved)]
	b = append(b, status, byte(len(addrs)))
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			v := a.As4()
			b = append(append(b, 4), v[:]...)
		} else {
			v := a.As16()
			b = append(append(b, 16), v[:]...)
		}
	}
	return b
}

// parseAnswer reads an answer: the addresses, or errNotFound or errResolveFailed.
func parseAnswer(b []byte) ([]netip.Addr, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("socks5: a resolve answer of %d bytes", len(b))
	}
	switch b[0] {
	case resolveOK:
	case resolveNotFound:
		return nil, errNotFound
	default:
		return nil, errResolveFailed
	}
	n, b := int(b[1]), b[2:]
	addrs := make([]netip.Addr, 0, n)
	for range n {
		if len(b) < 1 || (b[0] != 4 && b[0] != 16) || len(b) < 1+int(b[0]) {
			return nil, errors.New("socks5: a malformed resolve answer")
		}
		a, _ := netip.AddrFromSlice(b[1 : 1+b[0]])
		addrs = append(addrs, a)
		b = b[1+b[0]:]
	}
	if len(addrs) == 0 {
		return nil, errNotFound
	}
	return addrs, nil
}

// lookupStatus is the answer's status for a resolver's error.
func lookupStatus(err error) byte {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return resolveOK
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return resolveNotFound
	}
	return resolveFailed
}

// lookupFunc resolves a host name to its addresses.
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// systemLookup is the host's resolver.
func systemLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}
