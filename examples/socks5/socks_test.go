package main

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// appendRequest appends req's encoding as a client sends it: the inverse of readRequest.
func appendRequest(b []byte, req request) []byte {
	b = append(b, socksVersion, req.cmd, 0)
	switch {
	case req.name != "":
		b = append(b, atypDomain, byte(len(req.name)))
		b = append(b, req.name...)
	case req.addr.Is4():
		v := req.addr.As4()
		b = append(b, atypIPv4)
		b = append(b, v[:]...)
	default:
		v := req.addr.As16()
		b = append(b, atypIPv6)
		b = append(b, v[:]...)
	}
	return append(b, byte(req.port>>8), byte(req.port))
}

func TestReadRequest(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want request
		code byte // a *replyError's code; 0 for success or another error
		err  bool
	}{
		{"ipv4", []byte{5, 1, 0, 1, 10, 0, 0, 1, 0x1f, 0x90}, request{cmd: 1, addr: netip.MustParseAddr("10.0.0.1"), port: 8080}, 0, false},
		{"ipv6", append(append([]byte{5, 1, 0, 4}, netip.MustParseAddr("2001:db8::1").AsSlice()...), 0, 80),
			request{cmd: 1, addr: netip.MustParseAddr("2001:db8::1"), port: 80}, 0, false},
		{"ipv4-mapped", append(append([]byte{5, 1, 0, 4}, netip.MustParseAddr("::ffff:10.0.0.1").AsSlice()...), 0, 80),
			request{cmd: 1, addr: netip.MustParseAddr("10.0.0.1"), port: 80}, 0, false},
		{"domain", append([]byte{5, 1, 0, 3, 11}, "example.com\x01\xbb"...), request{cmd: 1, name: "example.com", port: 443}, 0, false},
		{"ipv4 literal as domain", append([]byte{5, 1, 0, 3, 8}, "10.0.0.1\x00\x50"...), request{cmd: 1, addr: netip.MustParseAddr("10.0.0.1"), port: 80}, 0, false},
		{"ipv6 literal as domain", append([]byte{5, 1, 0, 3, 3}, "::1\x00\x50"...), request{cmd: 1, addr: netip.IPv6Loopback(), port: 80}, 0, false},
		{"empty domain", []byte{5, 1, 0, 3, 0, 0, 80}, request{}, repHostUnreachable, true},
		{"space in domain", append([]byte{5, 1, 0, 3, 3}, "a b\x00\x50"...), request{}, repHostUnreachable, true},
		// An address with a zone names no destination at the far side: it goes there as a name,
		// which its resolver does not know.
		{"zone in domain", append([]byte{5, 1, 0, 3, 10}, "fe80::1%lo\x00\x50"...), request{cmd: 1, name: "fe80::1%lo", port: 80}, 0, false},
		{"bind", []byte{5, 2, 0, 1, 10, 0, 0, 1, 0, 80}, request{cmd: 2, addr: netip.MustParseAddr("10.0.0.1"), port: 80}, 0, false},
		{"address type", []byte{5, 1, 0, 2, 1, 2, 3, 4, 0, 80}, request{}, repAddrUnsupported, true},
		{"version", []byte{4, 1, 0, 1, 10, 0, 0, 1, 0, 80}, request{}, 0, true},
		{"short address", []byte{5, 1, 0, 1, 10, 0}, request{}, 0, true},
		{"short port", []byte{5, 1, 0, 1, 10, 0, 0, 1, 0}, request{}, 0, true},
		{"short domain", []byte{5, 1, 0, 3, 20, 'a'}, request{}, 0, true},
		{"empty", nil, request{}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readRequest(bytes.NewReader(tc.in))
			if tc.err != (err != nil) {
				t.Fatalf("readRequest: %+v, %v", got, err)
			}
			var re *replyError
			if errors.As(err, &re) != (tc.code != 0) || (re != nil && re.code != tc.code) {
				t.Fatalf("error %v, want reply code %d", err, tc.code)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReadGreeting(t *testing.T) {
	if m, err := readGreeting(bytes.NewReader([]byte{5, 2, 0, 2})); err != nil || !bytes.Equal(m, []byte{0, 2}) {
		t.Fatalf("methods %v, %v", m, err)
	}
	for _, in := range [][]byte{{4, 1, 0}, {5, 0}, {5, 3, 0, 1}, {5}, nil} {
		if _, err := readGreeting(bytes.NewReader(in)); err == nil {
			t.Errorf("% x taken", in)
		}
	}
	for _, tc := range []struct {
		offered []byte
		auth    bool
		want    byte
	}{
		{[]byte{0}, false, methodNone},
		{[]byte{2, 0}, false, methodNone},
		{[]byte{0, 2}, true, methodUserPass},
		{[]byte{0}, true, methodNoneOK},
		{[]byte{1, 2}, false, methodNoneOK},
	} {
		if got := chooseMethod(tc.offered, tc.auth); got != tc.want {
			t.Errorf("chooseMethod(%v, %v) = %#x, want %#x", tc.offered, tc.auth, got, tc.want)
		}
	}
}

func TestReadUserPass(t *testing.T) {
	u, p, err := readUserPass(bytes.NewReader([]byte{1, 3, 'b', 'o', 'b', 2, 'p', 'w'}))
	if err != nil || u != "bob" || p != "pw" {
		t.Fatalf("%q %q %v", u, p, err)
	}
	if u, p, err = readUserPass(bytes.NewReader([]byte{1, 0, 0})); err != nil || u != "" || p != "" {
		t.Fatalf("empty: %q %q %v", u, p, err)
	}
	for _, in := range [][]byte{{5, 1, 'a', 1, 'b'}, {1, 3, 'b'}, {1, 1, 'a', 4, 'p'}, {1}} {
		if _, _, err := readUserPass(bytes.NewReader(in)); err == nil {
			t.Errorf("% x taken", in)
		}
	}
}

func TestReply(t *testing.T) {
	cases := []struct {
		bnd  netip.AddrPort
		want []byte
	}{
		{netip.AddrPort{}, []byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0}},
		{netip.MustParseAddrPort("10.1.2.3:258"), []byte{5, 0, 0, 1, 10, 1, 2, 3, 1, 2}},
		{netip.MustParseAddrPort("[::ffff:10.1.2.3]:80"), []byte{5, 0, 0, 1, 10, 1, 2, 3, 0, 80}},
		{netip.MustParseAddrPort("[2001:db8::1]:80"), append(append([]byte{5, 0, 0, 4}, netip.MustParseAddr("2001:db8::1").AsSlice()...), 0, 80)},
	}
	for _, tc := range cases {
		if got := appendReply(nil, 0, tc.bnd); !bytes.Equal(got, tc.want) {
			t.Errorf("reply for %v: % x, want % x", tc.bnd, got, tc.want)
		}
	}
}

func TestResolveMessages(t *testing.T) {
	name, err := readResolveRequest(bytes.NewReader(appendResolveRequest(nil, "example.com")))
	if err != nil || name != "example.com" {
		t.Fatalf("%q %v", name, err)
	}
	for _, in := range [][]byte{{2, 1, 'a'}, {1, 0}, {1, 5, 'a'}, {1}} {
		if _, err := readResolveRequest(bytes.NewReader(in)); err == nil {
			t.Errorf("request % x taken", in)
		}
	}
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:192.0.2.2")}
	got, err := parseAnswer(appendAnswer(nil, resolveOK, addrs))
	want := []netip.Addr{addrs[0], addrs[1], netip.MustParseAddr("192.0.2.2")}
	if err != nil || len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("%v %v, want %v", got, err, want)
	}
	if _, err := parseAnswer(appendAnswer(nil, resolveNotFound, nil)); !errors.Is(err, errNotFound) {
		t.Fatalf("not found: %v", err)
	}
	if _, err := parseAnswer(appendAnswer(nil, resolveFailed, nil)); !errors.Is(err, errResolveFailed) {
		t.Fatalf("failed: %v", err)
	}
	if _, err := parseAnswer(appendAnswer(nil, resolveOK, nil)); !errors.Is(err, errNotFound) {
		t.Fatalf("no address: %v", err)
	}
	many := make([]netip.Addr, 40)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
	}
	b := appendAnswer(nil, resolveOK, many)
	if len(b) > maxAnswer {
		t.Fatalf("answer of %d bytes, bound %d", len(b), maxAnswer)
	}
	for _, in := range [][]byte{{0}, {0, 1, 4, 1, 2}, {0, 1, 6, 1, 2, 3, 4, 5, 6}, {0, 2, 4, 1, 2, 3, 4}} {
		if _, err := parseAnswer(in); err == nil {
			t.Errorf("answer % x taken", in)
		}
	}
}

// FuzzMessages feeds arbitrary bytes to every parser the proxy runs on what a peer sends: none
// may panic, and a request that parses encodes back to one that parses the same.
func FuzzMessages(f *testing.F) {
	f.Add(appendRequest(nil, request{cmd: cmdConnect, addr: netip.MustParseAddr("10.0.0.1"), port: 80}))
	f.Add(appendRequest(nil, request{cmd: cmdConnect, addr: netip.MustParseAddr("2001:db8::1"), port: 443}))
	f.Add(appendRequest(nil, request{cmd: cmdConnect, name: "example.com", port: 443}))
	f.Add([]byte{5, 2, 0, 2})
	f.Add([]byte{1, 3, 'b', 'o', 'b', 2, 'p', 'w'})
	f.Add(appendResolveRequest(nil, "example.com"))
	f.Add(appendAnswer(nil, resolveOK, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		readGreeting(bytes.NewReader(b))
		readUserPass(bytes.NewReader(b))
		readResolveRequest(bytes.NewReader(b))
		if addrs, err := parseAnswer(b); err == nil && len(addrs) == 0 {
			t.Fatal("an answer with no address taken")
		}
		r := bytes.NewReader(b)
		req, err := readRequest(r)
		if err != nil {
			return
		}
		if req.name != "" && checkName(req.name) != nil {
			t.Fatalf("name %q taken", req.name)
		}
		enc := appendRequest(nil, req)
		again, err := readRequest(bytes.NewReader(enc))
		if err != nil || again != req {
			t.Fatalf("%+v encodes to % x, read back as %+v, %v", req, enc, again, err)
		}
	})
}
