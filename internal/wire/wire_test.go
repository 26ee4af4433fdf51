package wire_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rendr-go/rendr/internal/wire"
	"github.com/rendr-go/rendr/l3"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata from the tables in the tests")

const framesFile = "frames.txt"

// Varint boundaries: the largest value of each encoded size and the smallest of the next.
const (
	b1 = 1<<6 - 1
	b2 = 1<<14 - 1
	b4 = 1<<30 - 1
	bM = wire.MaxVarint
)

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func seqMAC(start byte) (m [wire.MACSize]byte) {
	for i := range m {
		m[i] = start + byte(i)
	}
	return m
}

func fillMAC(b byte) (m [wire.MACSize]byte) {
	for i := range m {
		m[i] = b
	}
	return m
}

// golden lists one frame per line of testdata/frames.txt. Every frame type appears, and every
// varint field takes values on both sides of each encoding-size boundary.
var golden = []struct {
	name string
	f    wire.Frame
}{
	{"ping.0", wire.Frame{Type: wire.TypePing, Seq: 0}},
	{"ping.63", wire.Frame{Type: wire.TypePing, Seq: b1}},
	{"ping.64", wire.Frame{Type: wire.TypePing, Seq: b1 + 1}},
	{"ping.16383", wire.Frame{Type: wire.TypePing, Seq: b2}},
	{"ping.16384", wire.Frame{Type: wire.TypePing, Seq: b2 + 1}},
	{"ping.2^30-1", wire.Frame{Type: wire.TypePing, Seq: b4}},
	{"ping.2^30", wire.Frame{Type: wire.TypePing, Seq: b4 + 1}},
	{"ping.2^62-1", wire.Frame{Type: wire.TypePing, Seq: bM}},
	{"pong.1", wire.Frame{Type: wire.TypePong, Seq: 1}},
	{"pong.2^62-1", wire.Frame{Type: wire.TypePong, Seq: bM}},
	{"open.1", wire.Frame{Type: wire.TypeOpen, Flow: 1, Kind: wire.KindStream}},
	{"open.64", wire.Frame{Type: wire.TypeOpen, Flow: b1 + 1, Kind: wire.KindStream}},
	{"open.packet", wire.Frame{Type: wire.TypeOpen, Flow: 2, Kind: wire.KindPacket}},
	{"open.2^62-1", wire.Frame{Type: wire.TypeOpen, Flow: bM, Kind: wire.KindStream}},
	{"open.meta.tcp4", wire.Frame{Type: wire.TypeOpen, Flow: 3, Kind: wire.KindStream, Payload: identity("tcp4")}},
	{"open.meta.udp6", wire.Frame{Type: wire.TypeOpen, Flow: 4, Kind: wire.KindPacket, Payload: identity("udp6")}},
	{"open.meta.max", wire.Frame{Type: wire.TypeOpen, Flow: bM, Kind: wire.KindPacket, Payload: bytes.Repeat([]byte{0x77}, wire.MaxMeta)}},
	{"data.hello", wire.Frame{Type: wire.TypeData, Flow: 1, Offset: 0, Payload: []byte("hello")}},
	{"data.empty", wire.Frame{Type: wire.TypeData, Flow: 1, Offset: 0}},
	{"data.flow63.off16383", wire.Frame{Type: wire.TypeData, Flow: b1, Offset: b2, Payload: []byte{0x2a}}},
	{"data.flow16384.off2^30-1", wire.Frame{Type: wire.TypeData, Flow: b2 + 1, Offset: b4, Payload: []byte{1, 2}}},
	{"data.flow2^30.off2^30", wire.Frame{Type: wire.TypeData, Flow: b4 + 1, Offset: b4 + 1, Payload: []byte{3}}},
	{"data.off2^62-1.empty", wire.Frame{Type: wire.TypeData, Flow: bM, Offset: bM}},
	{"data.len63", wire.Frame{Type: wire.TypeData, Flow: 3, Offset: 64, Payload: fill(0x11, b1)}},
	{"data.len64", wire.Frame{Type: wire.TypeData, Flow: 3, Offset: 127, Payload: fill(0x22, b1+1)}},
	{"data.len16383", wire.Frame{Type: wire.TypeData, Flow: 4, Offset: 0, Payload: fill(0x33, b2)}},
	{"data.len16384", wire.Frame{Type: wire.TypeData, Flow: 4, Offset: b2, Payload: fill(0x44, b2+1)}},
	// The largest DATA that fits an encrypted record: 7 header bytes + 65512 = MaxPlaintext.
	{"data.fills-record", wire.Frame{Type: wire.TypeData, Flow: 1, Offset: 0, Payload: fill(0x55, wire.MaxPlaintext-7)}},
	// The largest length Parse accepts (MaxRecord); only a plain record could carry most of it.
	{"data.len-max", wire.Frame{Type: wire.TypeData, Flow: 1, Offset: 0, Payload: fill(0x66, wire.MaxRecord)}},
	{"data_fin.empty", wire.Frame{Type: wire.TypeDataFin, Flow: 1, Offset: 0}},
	{"data_fin.empty.off1000", wire.Frame{Type: wire.TypeDataFin, Flow: 1, Offset: 1000}},
	{"data_fin.bye", wire.Frame{Type: wire.TypeDataFin, Flow: 9, Offset: 5, Payload: []byte("bye")}},
	{"data_fin.ends-at-2^62-1", wire.Frame{Type: wire.TypeDataFin, Flow: 1, Offset: bM - 3, Payload: []byte{7, 8, 9}}},
	{"ack.initial", wire.Frame{Type: wire.TypeAck, Flow: 1, Seq: 0, Limit: 256 << 10}},
	{"ack.fin", wire.Frame{Type: wire.TypeAck, Flow: 1, Seq: 5, Limit: 5, Flags: wire.AckFin}},
	{"ack.open", wire.Frame{Type: wire.TypeAck, Flow: 1, Seq: 0, Limit: 256 << 10, Flags: wire.AckOpen}},
	{"ack.open.fin", wire.Frame{Type: wire.TypeAck, Flow: 3, Seq: 9, Limit: 9, Flags: wire.AckFin | wire.AckOpen}},
	{"ack.63.64", wire.Frame{Type: wire.TypeAck, Flow: b1, Seq: b1, Limit: b1 + 1}},
	{"ack.16383.16384", wire.Frame{Type: wire.TypeAck, Flow: b2, Seq: b2, Limit: b2 + 1}},
	{"ack.2^30-1.2^30", wire.Frame{Type: wire.TypeAck, Flow: b4, Seq: b4, Limit: b4 + 1}},
	{"ack.2^62-1", wire.Frame{Type: wire.TypeAck, Flow: bM, Seq: bM, Limit: bM, Flags: wire.AckFin}},
	{"max_data.0", wire.Frame{Type: wire.TypeMaxData, Limit: 0}},
	{"max_data.1MiB", wire.Frame{Type: wire.TypeMaxData, Limit: 1 << 20}},
	{"max_data.2^62-1", wire.Frame{Type: wire.TypeMaxData, Limit: bM}},
	{"reset.closed", wire.Frame{Type: wire.TypeReset, Flow: 1, Code: 0, Final: 0}},
	{"reset.refused", wire.Frame{Type: wire.TypeReset, Flow: b4 + 1, Code: 1, Final: b2}},
	{"reset.2^62-1", wire.Frame{Type: wire.TypeReset, Flow: bM, Code: bM, Final: bM}},
	{"stop.closed", wire.Frame{Type: wire.TypeStop, Flow: 1, Code: 0}},
	{"stop.refused", wire.Frame{Type: wire.TypeStop, Flow: 5, Code: 1}},
	{"stop.unknown", wire.Frame{Type: wire.TypeStop, Flow: b2 + 1, Code: 2}},
	{"join_proof.zero", wire.Frame{Type: wire.TypeJoinProof}},
	{"join_proof.seq", wire.Frame{Type: wire.TypeJoinProof, MAC: seqMAC(0)}},
	{"join_proof.ff", wire.Frame{Type: wire.TypeJoinProof, MAC: fillMAC(0xff)}},
	{"close.0", wire.Frame{Type: wire.TypeClose, Code: 0}},
	{"close.2^62-1", wire.Frame{Type: wire.TypeClose, Code: bM}},
	{"datagram.small", wire.Frame{Type: wire.TypeDatagram, Flow: 2, Seq: 1, Payload: []byte("ping")}},
	{"datagram.empty", wire.Frame{Type: wire.TypeDatagram, Flow: b1 + 1, Seq: b2 + 1}},
	{"datagram.max", wire.Frame{Type: wire.TypeDatagram, Flow: bM, Seq: bM, Payload: fill(0xd7, wire.MaxDatagram)}},
	{"path_ack.one", pathAck(0, wire.AckRange{Lo: 0, Hi: 0})},
	{"path_ack.run", pathAck(250, wire.AckRange{Lo: 1, Hi: b1 + 5})},
	{"path_ack.gaps", pathAck(b2, wire.AckRange{Lo: b2, Hi: b4}, wire.AckRange{Lo: 70, Hi: 90}, wire.AckRange{Lo: 0, Hi: 3})},
	{"path_ack_ce.one", pathAckCE(0, 1, wire.AckRange{Lo: 0, Hi: 0})},
	{"path_ack_ce.gaps", pathAckCE(b1, b2, wire.AckRange{Lo: b2, Hi: b4}, wire.AckRange{Lo: 0, Hi: 3})},
	{"path_challenge", wire.Frame{Type: wire.TypePathChallenge, Seq: 0x0123456789abcdef}},
	{"path_response", wire.Frame{Type: wire.TypePathResponse, Seq: bM + 1}},
	{"padding.empty", wire.Frame{Type: wire.TypePadding}},
	{"padding.1200", wire.Frame{Type: wire.TypePadding, Payload: make([]byte, 1200)}},
	{"route.leaf", wire.Frame{Type: wire.TypeRoute, Seq: 1, Payload: planBytes(leafNode("wifi"))}},
	{"route.nested", wire.Frame{Type: wire.TypeRoute, Seq: b1 + 1, Payload: planBytes(wire.RouteNode{Kind: wire.RouteRace,
		Kids: []wire.RouteNode{leafNode("a"), {Kind: wire.RouteBond, Kids: []wire.RouteNode{leafNode("lte1"), leafNode("lte2")}}}})}},
}

// pathAck is the PATH_ACK frame of ranges, as Parse returns it.
func pathAck(delay uint64, ranges ...wire.AckRange) wire.Frame {
	return pathAckCE(delay, 0, ranges...)
}

// pathAckCE is the PATH_ACK_CE frame of ranges with ce packets marked (a PATH_ACK when ce is 0).
func pathAckCE(delay, ce uint64, ranges ...wire.AckRange) wire.Frame {
	f, _, err := wire.Parse(wire.AppendPathAck(nil, delay, ranges, ce))
	if err != nil {
		panic(err)
	}
	return f
}

func leafNode(name string) wire.RouteNode { return wire.RouteNode{Kind: wire.RouteLeaf, Name: name} }

// planBytes is the encoding of a route plan alone, as Parse leaves it in Payload.
func planBytes(n wire.RouteNode) []byte { return wire.AppendRoute(nil, 0, n)[2:] }

// planText renders a plan: a leaf's name, or race(...) / bond(...).
func planText(n wire.RouteNode) string {
	switch n.Kind {
	case wire.RouteLeaf:
		return n.Name
	case wire.RouteRace, wire.RouteBond:
		var kids []string
		for _, k := range n.Kids {
			kids = append(kids, planText(k))
		}
		return map[uint8]string{wire.RouteRace: "race", wire.RouteBond: "bond"}[n.Kind] + "(" + strings.Join(kids, ",") + ")"
	}
	return "?"
}

// encode writes f with the Append function of its type.
func encode(b []byte, f *wire.Frame) []byte {
	switch f.Type {
	case wire.TypePing:
		return wire.AppendPing(b, f.Seq)
	case wire.TypePong:
		return wire.AppendPong(b, f.Seq)
	case wire.TypeOpen:
		return wire.AppendOpen(b, f.Flow, f.Kind, f.Payload)
	case wire.TypeData, wire.TypeDataFin:
		return wire.AppendData(b, f.Flow, f.Offset, f.Fin(), f.Payload)
	case wire.TypeAck:
		return wire.AppendAck(b, f.Flow, f.Delivered(), f.Limit, f.Flags)
	case wire.TypeMaxData:
		return wire.AppendMaxData(b, f.Limit)
	case wire.TypeReset:
		return wire.AppendReset(b, f.Flow, f.Code, f.Final)
	case wire.TypeStop:
		return wire.AppendStop(b, f.Flow, f.Code)
	case wire.TypeJoinProof:
		return wire.AppendJoinProof(b, &f.MAC)
	case wire.TypeClose:
		return wire.AppendClose(b, f.Code)
	case wire.TypeDatagram:
		return wire.AppendDatagram(b, f.Flow, f.Seq, f.Payload)
	case wire.TypePathAck, wire.TypePathAckCE:
		return wire.AppendPathAck(b, f.Offset, slices.Collect(wire.AckRanges(f)), f.Limit)
	case wire.TypePathChallenge:
		return wire.AppendPathChallenge(b, f.Seq)
	case wire.TypePathResponse:
		return wire.AppendPathResponse(b, f.Seq)
	case wire.TypePadding:
		return wire.AppendPadding(b, 1+wire.VarintLen(uint64(len(f.Payload)))+len(f.Payload))
	case wire.TypeRoute:
		plan, err := wire.DecodeRoute(f.Payload)
		if err != nil {
			panic(err)
		}
		return wire.AppendRoute(b, f.Seq, plan)
	}
	panic(fmt.Sprintf("no encoder for %v", f.Type))
}

// sameFrame compares the fields meaningful for f's type (Payload nil and empty are equal).
func sameFrame(a, b *wire.Frame) bool {
	if a.Type == b.Type && (a.Type == wire.TypePathAck || a.Type == wire.TypePathAckCE) {
		// Payload holds the ranges as sent; a non-minimal encoding lists the same ones.
		return a.Seq == b.Seq && a.Offset == b.Offset && a.Limit == b.Limit &&
			slices.Equal(slices.Collect(wire.AckRanges(a)), slices.Collect(wire.AckRanges(b)))
	}
	return a.Type == b.Type && a.Flow == b.Flow && a.Offset == b.Offset && a.Seq == b.Seq &&
		a.Limit == b.Limit && a.Code == b.Code && a.Kind == b.Kind && a.Flags == b.Flags &&
		bytes.Equal(a.Payload, b.Payload) && a.MAC == b.MAC
}

// packHex writes b in hex, with runs of 16 or more equal bytes written as (xx*N) so that
// large frames stay readable.
func packHex(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] == b[i] {
			j++
		}
		if j-i >= 16 {
			fmt.Fprintf(&sb, "(%02x*%d)", b[i], j-i)
		} else {
			sb.WriteString(hex.EncodeToString(b[i:j]))
		}
		i = j
	}
	return sb.String()
}

func unpackHex(s string) ([]byte, error) {
	var out []byte
	for s != "" {
		if s[0] == '(' {
			end := strings.IndexByte(s, ')')
			if end < 0 {
				return nil, fmt.Errorf("unterminated run in %q", s)
			}
			bs, count, ok := strings.Cut(s[1:end], "*")
			n, err := strconv.Atoi(count)
			v, err2 := hex.DecodeString(bs)
			if !ok || err != nil || err2 != nil || len(v) != 1 || n < 0 {
				return nil, fmt.Errorf("bad run %q", s[:end+1])
			}
			out = append(out, bytes.Repeat(v, n)...)
			s = s[end+1:]
			continue
		}
		end := strings.IndexByte(s, '(')
		if end < 0 {
			end = len(s)
		}
		v, err := hex.DecodeString(s[:end])
		if err != nil {
			return nil, err
		}
		out = append(out, v...)
		s = s[end:]
	}
	return out, nil
}

// describe renders the fields of f's type as the golden file shows them.
func describe(f *wire.Frame) string {
	switch f.Type {
	case wire.TypePing, wire.TypePong:
		return fmt.Sprintf("%v seq=%d", f.Type, f.Seq)
	case wire.TypeOpen:
		if len(f.Payload) > 0 {
			return fmt.Sprintf("%v flow=%d kind=%d meta=%s", f.Type, f.Flow, f.Kind, packHex(f.Payload))
		}
		return fmt.Sprintf("%v flow=%d kind=%d", f.Type, f.Flow, f.Kind)
	case wire.TypeData, wire.TypeDataFin:
		p := packHex(f.Payload)
		if p == "" {
			p = "-"
		}
		return fmt.Sprintf("%v flow=%d offset=%d payload=%s", f.Type, f.Flow, f.Offset, p)
	case wire.TypeAck:
		return fmt.Sprintf("%v flow=%d delivered=%d limit=%d flags=%d", f.Type, f.Flow, f.Delivered(), f.Limit, f.Flags)
	case wire.TypeMaxData:
		return fmt.Sprintf("%v limit=%d", f.Type, f.Limit)
	case wire.TypeReset:
		return fmt.Sprintf("%v flow=%d code=%d final=%d", f.Type, f.Flow, f.Code, f.Final)
	case wire.TypeStop:
		return fmt.Sprintf("%v flow=%d code=%d", f.Type, f.Flow, f.Code)
	case wire.TypeJoinProof:
		return fmt.Sprintf("%v mac=%s", f.Type, packHex(f.MAC[:]))
	case wire.TypeClose:
		return fmt.Sprintf("%v code=%d", f.Type, f.Code)
	case wire.TypeDatagram:
		p := packHex(f.Payload)
		if p == "" {
			p = "-"
		}
		return fmt.Sprintf("%v flow=%d seq=%d payload=%s", f.Type, f.Flow, f.Seq, p)
	case wire.TypePathAck, wire.TypePathAckCE:
		var rs []string
		for r := range wire.AckRanges(f) {
			rs = append(rs, fmt.Sprintf("%d-%d", r.Lo, r.Hi))
		}
		s := fmt.Sprintf("%v delay=%d ranges=%s", f.Type, f.Offset, strings.Join(rs, ","))
		if f.Type == wire.TypePathAckCE {
			s += fmt.Sprintf(" ce=%d", f.Limit)
		}
		return s
	case wire.TypePathChallenge, wire.TypePathResponse:
		return fmt.Sprintf("%v data=%016x", f.Type, f.Seq)
	case wire.TypePadding:
		return fmt.Sprintf("%v bytes=%d", f.Type, len(f.Payload))
	case wire.TypeRoute:
		plan, err := wire.DecodeRoute(f.Payload)
		if err != nil {
			return fmt.Sprintf("%v seq=%d plan=invalid", f.Type, f.Seq)
		}
		return fmt.Sprintf("%v seq=%d plan=%s", f.Type, f.Seq, planText(plan))
	}
	return f.Type.String()
}

type goldenLine struct {
	name, desc string
	enc        []byte
}

// readGolden parses "name TYPE field=value... hex" lines; # starts a comment.
func readGolden(t *testing.T, file string) []goldenLine {
	t.Helper()
	fd, err := os.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	defer fd.Close()
	var out []goldenLine
	sc := bufio.NewScanner(fd)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) < 3 {
			t.Fatalf("%s: short line %q", file, line)
		}
		enc, err := unpackHex(fs[len(fs)-1])
		if err != nil {
			t.Fatalf("%s: %s: %v", file, fs[0], err)
		}
		out = append(out, goldenLine{name: fs[0], desc: strings.Join(fs[1:len(fs)-1], " "), enc: enc})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeGolden(t *testing.T) {
	var sb strings.Builder
	sb.WriteString("# rendr wire version 1: frame test vectors (docs/wire.md, \"Frames\").\n")
	sb.WriteString("# One frame per line: name, frame type, fields, encoding in hex.\n")
	sb.WriteString("# In hex, (xx*N) stands for the byte xx repeated N times; payload=- is empty.\n")
	sb.WriteString("# Generated by: go test ./internal/wire -run TestGolden -update\n")
	for _, g := range golden {
		fmt.Fprintf(&sb, "%s %s %s\n", g.name, describe(&g.f), packHex(encode(nil, &g.f)))
	}
	if err := os.WriteFile(filepath.Join("testdata", framesFile), []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGoldenFrames encodes every table frame with the Append functions and compares with the
// file, then decodes every line of the file and compares with the table.
func TestGoldenFrames(t *testing.T) {
	if *update {
		writeGolden(t)
	}
	lines := readGolden(t, framesFile)
	if len(lines) != len(golden) {
		t.Fatalf("%s has %d frames, the table %d (run with -update)", framesFile, len(lines), len(golden))
	}
	types := map[wire.Type]bool{}
	for i, g := range golden {
		l := lines[i]
		if l.name != g.name {
			t.Fatalf("line %d is %q, want %q", i, l.name, g.name)
		}
		if enc := encode(nil, &g.f); !bytes.Equal(enc, l.enc) {
			t.Errorf("%s: encoded %s, file has %s", g.name, packHex(enc), packHex(l.enc))
		}
		f, n, err := wire.Parse(l.enc)
		if err != nil {
			t.Errorf("%s: Parse: %v", g.name, err)
			continue
		}
		if n != len(l.enc) {
			t.Errorf("%s: Parse used %d of %d bytes", g.name, n, len(l.enc))
		}
		if !sameFrame(&f, &g.f) {
			t.Errorf("%s: decoded %+v, want %+v", g.name, f, g.f)
		}
		if d := describe(&f); d != l.desc {
			t.Errorf("%s: decoded fields %q, file says %q", g.name, d, l.desc)
		}
		types[f.Type] = true
	}
	for ty := wire.TypePing; ty <= wire.TypePadding; ty++ {
		if !types[ty] {
			t.Errorf("no vector for %v", ty)
		}
	}
}

// TestParseSequence decodes every golden frame from one buffer, as a record carries them.
func TestParseSequence(t *testing.T) {
	var buf []byte
	for _, g := range golden {
		if len(g.f.Payload) > 1000 {
			continue
		}
		buf = encode(buf, &g.f)
	}
	i := 0
	for rest := buf; len(rest) > 0; i++ {
		for len(golden[i].f.Payload) > 1000 {
			i++
		}
		f, n, err := wire.Parse(rest)
		if err != nil {
			t.Fatalf("frame %d (%s): %v", i, golden[i].name, err)
		}
		if !sameFrame(&f, &golden[i].f) {
			t.Fatalf("frame %d: got %+v, want %+v", i, f, golden[i].f)
		}
		rest = rest[n:]
	}
}

func TestParseAliasesPayload(t *testing.T) {
	b := wire.AppendData(nil, 1, 0, false, []byte("abc"))
	f, _, err := wire.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] = 'z'
	if string(f.Payload) != "abz" {
		t.Fatalf("payload %q does not alias the input", f.Payload)
	}
	if cap(f.Payload) != len(f.Payload) {
		t.Fatalf("payload cap %d > len %d: appending to it would overwrite the next frame", cap(f.Payload), len(f.Payload))
	}
}

// checkErr asserts a failed Parse: the sentinel, no bytes used, a zero frame.
func checkErr(t *testing.T, what string, b []byte, want error) {
	t.Helper()
	f, n, err := wire.Parse(b)
	if !errors.Is(err, want) {
		t.Fatalf("%s: Parse(%x) = %v, want %v", what, b, err, want)
	}
	if n != 0 || !sameFrame(&f, &wire.Frame{}) {
		t.Fatalf("%s: failed Parse returned n=%d frame %+v", what, n, f)
	}
}

func TestParseTruncatedEverywhere(t *testing.T) {
	checkErr(t, "empty", nil, wire.ErrTruncated)
	for _, g := range golden {
		enc := encode(nil, &g.f)
		for i := range len(enc) {
			checkErr(t, fmt.Sprintf("%s cut at %d", g.name, i), enc[:i], wire.ErrTruncated)
		}
	}
}

func TestParseUnknownType(t *testing.T) {
	for v := range 256 {
		ty := wire.Type(v)
		if ty >= wire.TypePing && ty <= wire.TypePathAckCE {
			continue
		}
		checkErr(t, ty.String(), []byte{byte(v)}, wire.ErrUnknownType)
		checkErr(t, ty.String()+" with more", []byte{byte(v), 0, 0, 0, 0, 0, 0, 0, 0}, wire.ErrUnknownType)
	}
}

func TestParseAckBadFlags(t *testing.T) {
	for fl := 4; fl < 256; fl++ {
		b := wire.AppendAck(nil, 1, 0, 10, uint8(fl))
		checkErr(t, fmt.Sprintf("flags %#x", fl), b, wire.ErrMalformed)
	}
}

func TestParseAckLimitBelowDelivered(t *testing.T) {
	for _, c := range [][2]uint64{{1, 0}, {64, 63}, {b2 + 1, b2}, {b4 + 1, b4}, {bM, bM - 1}, {bM, 0}} {
		for _, fl := range []uint8{0, wire.AckFin} {
			b := wire.AppendAck(nil, 1, c[0], c[1], fl)
			checkErr(t, fmt.Sprintf("delivered %d limit %d", c[0], c[1]), b, wire.ErrMalformed)
		}
	}
}

func TestParseDataTooLong(t *testing.T) {
	for _, ty := range []wire.Type{wire.TypeData, wire.TypeDataFin} {
		for _, l := range []uint64{wire.MaxRecord + 1, b4 + 1, bM} {
			hdr := wire.AppendVarint(wire.AppendVarint(wire.AppendVarint([]byte{byte(ty)}, 1), 0), l)
			checkErr(t, fmt.Sprintf("%v length %d", ty, l), hdr, wire.ErrMalformed)
		}
		// With the whole payload present: the limit, not truncation, refuses it.
		b := wire.AppendData(nil, 1, 0, ty == wire.TypeDataFin, make([]byte, wire.MaxRecord+1))
		checkErr(t, fmt.Sprintf("%v full payload", ty), b, wire.ErrMalformed)
		// Past the largest offset a varint can carry.
		b = wire.AppendData(nil, 1, bM, ty == wire.TypeDataFin, []byte{1})
		checkErr(t, fmt.Sprintf("%v end beyond 2^62-1", ty), b, wire.ErrMalformed)
		b = wire.AppendData(nil, 1, bM-10, ty == wire.TypeDataFin, make([]byte, 11))
		checkErr(t, fmt.Sprintf("%v end 2^62", ty), b, wire.ErrMalformed)
	}
}

func TestParseOpenBadKind(t *testing.T) {
	for k := 2; k < wire.OpenMeta; k++ {
		checkErr(t, fmt.Sprintf("kind %d", k), wire.AppendOpen(nil, 1, uint8(k), nil), wire.ErrMalformed)
		checkErr(t, fmt.Sprintf("kind %d with metadata", k), wire.AppendOpen(nil, 1, uint8(k), []byte{1}), wire.ErrMalformed)
	}
}

// TestParseOpenMeta: an OPEN's metadata is 1 to MaxMeta bytes; an empty one (the flag with
// length 0: not the one encoding of "none"), a longer one, or one cut short is refused.
func TestParseOpenMeta(t *testing.T) {
	for _, n := range []int{1, wire.MaxMeta} {
		b := wire.AppendOpen(nil, 5, wire.KindStream, bytes.Repeat([]byte{9}, n))
		f, used, err := wire.Parse(b)
		if err != nil || used != len(b) || len(f.Payload) != n || f.Kind != wire.KindStream {
			t.Fatalf("%d bytes of metadata: %+v, %d of %d bytes, %v", n, f, used, len(b), err)
		}
	}
	checkErr(t, "length 0", []byte{byte(wire.TypeOpen), 1, wire.OpenMeta, 0}, wire.ErrMalformed)
	checkErr(t, "too long", wire.AppendOpen(nil, 1, wire.KindPacket, make([]byte, wire.MaxMeta+1)), wire.ErrMalformed)
	short := wire.AppendOpen(nil, 1, wire.KindStream, make([]byte, 10))
	checkErr(t, "cut short", short[:len(short)-1], wire.ErrTruncated)
}

// identity is the encoding of the l3 test vector of that name.
func identity(name string) []byte {
	ids := map[string]l3.Identity{
		"tcp4": {Proto: l3.TCP, Src: netip.MustParseAddrPort("10.0.0.2:40000"), Dst: netip.MustParseAddrPort("192.0.2.1:443")},
		"udp6": {Proto: l3.UDP, Src: netip.MustParseAddrPort("[2001:db8::2]:53535"), Dst: netip.MustParseAddrPort("[2001:db8:1::53]:53")},
	}
	b, err := ids[name].MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

// TestParseNonMinimal pins that a peer's non-minimal varints are accepted, as in QUIC.
func TestParseNonMinimal(t *testing.T) {
	b := []byte{byte(wire.TypePing), 0xc0, 0, 0, 0, 0, 0, 0, 0x25}
	f, n, err := wire.Parse(b)
	if err != nil || n != len(b) || f.Seq != 0x25 {
		t.Fatalf("Parse(%x) = %+v, %d, %v", b, f, n, err)
	}
}

func TestParseNoAlloc(t *testing.T) {
	var buf []byte
	for _, g := range golden {
		buf = encode(buf[:0], &g.f)
		b := buf
		allocs := testing.AllocsPerRun(20, func() {
			if _, _, err := wire.Parse(b); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Fatalf("%s: Parse allocated %v times", g.name, allocs)
		}
	}
}

// TestVarint checks the examples of RFC 9000 (appendix A.1) and every size boundary.
func TestVarint(t *testing.T) {
	for _, c := range []struct {
		v   uint64
		enc string
	}{
		{0, "00"}, {37, "25"}, {b1, "3f"}, {b1 + 1, "4040"}, {15293, "7bbd"}, {b2, "7fff"},
		{b2 + 1, "80004000"}, {494878333, "9d7f3e7d"}, {b4, "bfffffff"},
		{b4 + 1, "c000000040000000"}, {151288809941952652, "c2197c5eff14e88c"}, {bM, "ffffffffffffffff"},
	} {
		enc, _ := hex.DecodeString(c.enc)
		if got := wire.AppendVarint(nil, c.v); !bytes.Equal(got, enc) {
			t.Errorf("AppendVarint(%d) = %x, want %s", c.v, got, c.enc)
		}
		if n := wire.VarintLen(c.v); n != len(enc) {
			t.Errorf("VarintLen(%d) = %d, want %d", c.v, n, len(enc))
		}
		v, n := wire.ReadVarint(append(enc, 0xee))
		if v != c.v || n != len(enc) {
			t.Errorf("ReadVarint(%s) = %d, %d", c.enc, v, n)
		}
		for i := range len(enc) {
			if _, n := wire.ReadVarint(enc[:i]); n != 0 {
				t.Errorf("ReadVarint(%x) read %d bytes of a truncated varint", enc[:i], n)
			}
		}
	}
	// RFC 9000's non-minimal example: 0x4025 is 37 in two bytes.
	if v, n := wire.ReadVarint([]byte{0x40, 0x25}); v != 37 || n != 2 {
		t.Errorf("ReadVarint(4025) = %d, %d", v, n)
	}
}

func TestAppendVarintOutOfRange(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("AppendVarint(2^62) did not panic")
		}
	}()
	wire.AppendVarint(nil, bM+1)
}

// TestDataOverhead checks that the engine's size estimate covers the header exactly.
func TestDataOverhead(t *testing.T) {
	for _, flow := range []uint64{1, b1 + 1, b2 + 1, b4 + 1} {
		for _, off := range []uint64{0, b1, b2 + 1, bM - wire.MaxRecord} {
			for _, n := range []int{0, b1, b1 + 1, b2 + 1, wire.MaxPlaintext} {
				want := len(wire.AppendDataHeader(nil, flow, off, false, n))
				if got := wire.DataOverhead(flow, off, n); got != want {
					t.Errorf("DataOverhead(%d, %d, %d) = %d, header is %d", flow, off, n, got, want)
				}
			}
		}
	}
}

func TestTypeString(t *testing.T) {
	names := map[string]bool{}
	for ty := wire.TypePing; ty <= wire.TypePadding; ty++ {
		s := ty.String()
		if strings.HasPrefix(s, "TYPE(") || names[s] {
			t.Errorf("type %#x has name %q", uint8(ty), s)
		}
		names[s] = true
	}
	if s := wire.Type(0xee).String(); s != "TYPE(0xee)" {
		t.Errorf("unknown type prints as %q", s)
	}
}

// TestRoutePlanLimits: plans that break the rules of docs/wire.md section 6 are malformed.
func TestRoutePlanLimits(t *testing.T) {
	leaves := func(n int) []wire.RouteNode {
		var out []wire.RouteNode
		for i := range n {
			out = append(out, leafNode(fmt.Sprintf("p%d", i)))
		}
		return out
	}
	deep := leafNode("x")
	for range wire.MaxRouteDepth - 1 {
		deep = wire.RouteNode{Kind: wire.RouteRace, Kids: []wire.RouteNode{deep, leafNode("y")}}
	}
	wide := wire.RouteNode{Kind: wire.RouteBond, Kids: leaves(wire.MaxRouteKids)}
	for _, ok := range []wire.RouteNode{leafNode("a"), deep, wide} {
		b := wire.AppendRoute(nil, 5, ok)
		f, n, err := wire.Parse(b)
		if err != nil || n != len(b) {
			t.Fatalf("%s: Parse = %d of %d, %v", planText(ok), n, len(b), err)
		}
		back, err := wire.DecodeRoute(f.Payload)
		if err != nil || planText(back) != planText(ok) {
			t.Fatalf("%s: decoded as %s, %v", planText(ok), planText(back), err)
		}
	}
	tooDeep := wire.RouteNode{Kind: wire.RouteRace, Kids: []wire.RouteNode{deep, leafNode("z")}}
	tooWide := wire.RouteNode{Kind: wire.RouteBond, Kids: leaves(wire.MaxRouteKids + 1)}
	lonely := wire.RouteNode{Kind: wire.RouteRace, Kids: leaves(1)}
	many := wire.RouteNode{Kind: wire.RouteRace}
	for range 8 {
		many.Kids = append(many.Kids, wire.RouteNode{Kind: wire.RouteBond, Kids: leaves(8)})
	}
	for name, bad := range map[string][]byte{
		"too deep":       wire.AppendRoute(nil, 1, tooDeep),
		"too wide":       wire.AppendRoute(nil, 1, tooWide),
		"one child":      wire.AppendRoute(nil, 1, lonely),
		"too many nodes": wire.AppendRoute(nil, 1, many),
		"empty name":     wire.AppendRoute(nil, 1, leafNode("")),
		"name too long":  wire.AppendRoute(nil, 1, leafNode(strings.Repeat("n", 65))),
		"unknown kind":   {byte(wire.TypeRoute), 1, 3, 1, 'a'},
	} {
		checkErr(t, name, bad, wire.ErrMalformed)
	}
	if _, err := wire.DecodeRoute(append(planBytes(leafNode("a")), 0)); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("a plan with a trailing byte decoded: %v", err)
	}
}

func TestDatagramLimits(t *testing.T) {
	if got := len(wire.AppendDatagram(nil, wire.MaxVarint, wire.MaxVarint, make([]byte, wire.MaxDatagram))); got != wire.MaxPlaintext {
		t.Fatalf("the largest DATAGRAM frame is %d bytes, want MaxPlaintext (%d)", got, wire.MaxPlaintext)
	}
	checkErr(t, "too long", wire.AppendDatagram(nil, 2, 1, make([]byte, wire.MaxDatagram+1)), wire.ErrMalformed)
	checkErr(t, "sequence 0", wire.AppendDatagram(nil, 2, 0, []byte("x")), wire.ErrMalformed)
}
