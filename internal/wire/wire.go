// Package wire encodes and decodes rendr frames: the units the flow engine and the path layer
// exchange inside a record. docs/wire.md is the specification; this package is its only
// implementation, so nothing else in rendr parses bytes from the network.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the wire version carried in the preface. A peer that does not speak it is refused
// before any handshake message is processed.
const Version = 1

// Limits of the record layer (docs/wire.md, "Limits").
const (
	// MaxRecord is the largest record body on a byte-stream carrier: the 2-byte length prefix
	// caps it, and it includes the AEAD tag when the record is encrypted.
	MaxRecord = 65535
	// TagSize is the AEAD tag appended to every encrypted record.
	TagSize = 16
	// MaxPlaintext is the largest run of frames one encrypted record can carry.
	MaxPlaintext = MaxRecord - TagSize
	// MaxParts bounds the AEAD messages of one split record: its frames, then the payload of
	// its last DATA frame in up to MaxParts-1 pieces (docs/wire.md, section 5).
	MaxParts = 8
	// MaxSplitBody is the largest split record after its 2-byte zero prefix: the part count,
	// a 2-byte length per part, and MaxParts messages carrying MaxPlaintext bytes in all.
	MaxSplitBody = 1 + MaxParts*(2+TagSize) + MaxPlaintext
	// MaxDatagram is the largest DATAGRAM payload: it must fit one record with its header
	// (type, an 8-byte flow id and sequence number, a 4-byte length).
	MaxDatagram = MaxPlaintext - 1 - 8 - 8 - 4
	// MaxVarint is the largest value a varint can carry (RFC 9000, section 16).
	MaxVarint = 1<<62 - 1
	// MACSize is the size of a JOIN_PROOF authenticator.
	MACSize = 32
)

// Type identifies a frame.
type Type uint8

// Frame types. Values are fixed by docs/wire.md; new types only ever get new numbers.
const (
	TypePing      Type = 0x01 // liveness probe; the peer echoes Seq in a PONG
	TypePong      Type = 0x02 // answer to a PING
	TypeOpen      Type = 0x03 // a new flow, sent by the dialing side before its first DATA
	TypeData      Type = 0x04 // stream bytes at Offset
	TypeDataFin   Type = 0x05 // stream bytes at Offset, and the stream ends after them
	TypeAck       Type = 0x06 // bytes delivered to the application buffer, and the flow window
	TypeMaxData   Type = 0x07 // the session-wide window
	TypeReset     Type = 0x08 // the sender abandons its direction of a flow
	TypeStop      Type = 0x09 // the receiver will read no more of a flow
	TypeJoinProof Type = 0x0a // first frame on a path that joins an existing session
	TypeClose     Type = 0x0b // the session ends (Code says why)
	TypeRoute     Type = 0x0c // the dialing side's route: which of its paths carry traffic, and how
	TypeDatagram  Type = 0x0d // one datagram of a packet flow: never resent

	// Frames of datagram paths (docs/wire.md, section 5, "Packet paths"): the path itself reads them; they
	// never reach the flow engine.
	TypePathAck       Type = 0x0e // which of the path's packets arrived
	TypePathChallenge Type = 0x0f // prove you receive at the address this came from
	TypePathResponse  Type = 0x10 // the answer to a PATH_CHALLENGE
	TypePadding       Type = 0x11 // bytes that make a packet the size it probes
	TypePathAckCE     Type = 0x12 // PATH_ACK, and how many packets met congestion on the way
)

func (t Type) String() string {
	switch t {
	case TypePing:
		return "PING"
	case TypePong:
		return "PONG"
	case TypeOpen:
		return "OPEN"
	case TypeData:
		return "DATA"
	case TypeDataFin:
		return "DATA_FIN"
	case TypeAck:
		return "ACK"
	case TypeMaxData:
		return "MAX_DATA"
	case TypeReset:
		return "RESET"
	case TypeStop:
		return "STOP"
	case TypeJoinProof:
		return "JOIN_PROOF"
	case TypeClose:
		return "CLOSE"
	case TypeRoute:
		return "ROUTE"
	case TypeDatagram:
		return "DATAGRAM"
	case TypePathAck:
		return "PATH_ACK"
	case TypePathChallenge:
		return "PATH_CHALLENGE"
	case TypePathResponse:
		return "PATH_RESPONSE"
	case TypePadding:
		return "PADDING"
	case TypePathAckCE:
		return "PATH_ACK_CE"
	}
	return fmt.Sprintf("TYPE(0x%02x)", uint8(t))
}

// Flow kinds carried by OPEN.
const (
	KindStream = 0
	KindPacket = 1 // a packet flow: datagrams (docs/wire.md 8.11)
)

// OpenMeta is set in an OPEN's Kind byte when metadata follows: a varint length (1 to MaxMeta)
// and that many bytes, the flow's L3 identity (docs/wire.md 8.12). Frame.Kind never has it;
// the metadata is Frame.Payload.
const OpenMeta = 0x80

// MaxMeta is the most metadata an OPEN carries: room for an IPv6 identity and more.
const MaxMeta = 64

// ACK flags. AckFin: the receiver has seen the end of the stream. AckOpen: the receiver has the
// flow's OPEN (the listening side sets it in every ACK of a flow whose OPEN it has), so the
// dialing side stops sending the OPEN again.
const (
	AckFin  = 0x01
	AckOpen = 0x02
)

// Errors returned by Parse. A decode error is a protocol violation: the path that carried the
// record is closed, and nothing it carried after the last good frame is used.
var (
	ErrTruncated   = errors.New("wire: truncated frame")
	ErrUnknownType = errors.New("wire: unknown frame type")
	ErrMalformed   = errors.New("wire: malformed frame")
)

// Frame is one decoded frame. Only the fields of its Type are meaningful; Payload aliases the
// buffer given to Parse and is valid only as long as that buffer is.
type Frame struct {
	Type    Type
	Flow    uint64 // OPEN, DATA, ACK, RESET, STOP
	Offset  uint64 // DATA: stream offset of Payload[0]
	Seq     uint64 // PING, PONG: probe sequence; ACK: delivered offset; PATH_ACK: largest packet; PATH_CHALLENGE, PATH_RESPONSE: the data
	Limit   uint64 // ACK: flow window end; MAX_DATA: session window end; PATH_ACK_CE: packets marked
	Code    uint64 // RESET, STOP, CLOSE: error code
	Final   uint64 // RESET: the final size, one past the highest offset ever sent
	Kind    uint8  // OPEN, without OpenMeta
	Flags   uint8  // ACK
	Payload []byte // DATA, DATAGRAM; OPEN: its metadata; PATH_ACK: its ranges (AckRanges reads them); PADDING: the padding
	MAC     [MACSize]byte
}

// Fin reports whether a DATA frame ends its stream.
func (f *Frame) Fin() bool { return f.Type == TypeDataFin }

// Delivered is the ACK's cumulative delivered offset.
func (f *Frame) Delivered() uint64 { return f.Seq }

// AppendVarint appends v in the RFC 9000 variable-length encoding. v must be <= MaxVarint.
func AppendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return append(b, byte(v>>8)|0x40, byte(v))
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, uint32(v)|0x80<<24)
	case v <= MaxVarint:
		return binary.BigEndian.AppendUint64(b, v|0xc0<<56)
	}
	panic("wire: varint out of range")
}

// VarintLen is the encoded size of v.
func VarintLen(v uint64) int {
	switch {
	case v < 1<<6:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<30:
		return 4
	}
	return 8
}

// ReadVarint decodes a varint at the start of b and returns it with its size. Non-minimal
// encodings are accepted, as in QUIC; n is 0 when b is too short.
func ReadVarint(b []byte) (v uint64, n int) {
	if len(b) == 0 {
		return 0, 0
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0
	}
	v = uint64(b[0] & 0x3f)
	for i := 1; i < n; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v, n
}

// DataOverhead is the largest header a DATA frame for (flow, offset) adds before its payload of
// length n, so the engine can size payloads to fill a record exactly.
func DataOverhead(flow, offset uint64, n int) int {
	return 1 + VarintLen(flow) + VarintLen(offset) + VarintLen(uint64(n))
}

// AppendPing appends a PING frame.
func AppendPing(b []byte, seq uint64) []byte { return AppendVarint(append(b, byte(TypePing)), seq) }

// AppendPong appends a PONG frame.
func AppendPong(b []byte, seq uint64) []byte { return AppendVarint(append(b, byte(TypePong)), seq) }

// AppendOpen appends an OPEN frame, with meta when it is not empty (at most MaxMeta bytes).
func AppendOpen(b []byte, flow uint64, kind uint8, meta []byte) []byte {
	b = AppendVarint(append(b, byte(TypeOpen)), flow)
	if len(meta) == 0 {
		return append(b, kind)
	}
	return append(AppendVarint(append(b, kind|OpenMeta), uint64(len(meta))), meta...)
}

// AppendData appends a DATA (or DATA_FIN) frame carrying p at offset.
func AppendData(b []byte, flow, offset uint64, fin bool, p []byte) []byte {
	return append(AppendDataHeader(b, flow, offset, fin, len(p)), p...)
}

// AppendDataHeader appends the header of a DATA frame whose n payload bytes the caller
// appends next, so payloads can be copied straight from a send buffer into the record.
func AppendDataHeader(b []byte, flow, offset uint64, fin bool, n int) []byte {
	t := TypeData
	if fin {
		t = TypeDataFin
	}
	b = AppendVarint(append(b, byte(t)), flow)
	b = AppendVarint(b, offset)
	return AppendVarint(b, uint64(n))
}

// AppendDatagram appends a DATAGRAM frame: payload p, sequence number seq (from 1, per flow
// and direction).
func AppendDatagram(b []byte, flow, seq uint64, p []byte) []byte {
	b = AppendVarint(AppendVarint(append(b, byte(TypeDatagram)), flow), seq)
	return append(AppendVarint(b, uint64(len(p))), p...)
}

// DatagramOverhead is the largest header a DATAGRAM frame adds to a payload of n bytes.
func DatagramOverhead(flow, seq uint64, n int) int {
	return 1 + VarintLen(flow) + VarintLen(seq) + VarintLen(uint64(n))
}

// AppendAck appends an ACK frame: delivered is the count of bytes handed to the application
// buffer, limit the offset the sender may send up to.
func AppendAck(b []byte, flow, delivered, limit uint64, flags uint8) []byte {
	b = AppendVarint(append(b, byte(TypeAck)), flow)
	b = AppendVarint(b, delivered)
	b = AppendVarint(b, limit)
	return append(b, flags)
}

// AppendMaxData appends a MAX_DATA frame.
func AppendMaxData(b []byte, limit uint64) []byte {
	return AppendVarint(append(b, byte(TypeMaxData)), limit)
}

// AppendReset appends a RESET frame. final is one past the highest offset the sender ever
// sent on the flow, so the receiver can return the session credit of bytes it never got.
func AppendReset(b []byte, flow, code, final uint64) []byte {
	b = AppendVarint(AppendVarint(append(b, byte(TypeReset)), flow), code)
	return AppendVarint(b, final)
}

// AppendStop appends a STOP frame.
func AppendStop(b []byte, flow, code uint64) []byte {
	return AppendVarint(AppendVarint(append(b, byte(TypeStop)), flow), code)
}

// AppendJoinProof appends a JOIN_PROOF frame.
func AppendJoinProof(b []byte, mac *[MACSize]byte) []byte {
	return append(append(b, byte(TypeJoinProof)), mac[:]...)
}

// AppendClose appends a CLOSE frame.
func AppendClose(b []byte, code uint64) []byte {
	return AppendVarint(append(b, byte(TypeClose)), code)
}

// DataHeader decodes a DATA or DATA_FIN header at the start of b without its payload: the
// last frame of a split record's first part, whose payload is the record's other parts. It
// returns the frame (Payload nil), the header's size and the payload length; ok is false when
// b does not start with a well-formed DATA header.
func DataHeader(b []byte) (f Frame, n int, length uint64, ok bool) {
	if len(b) == 0 || (Type(b[0]) != TypeData && Type(b[0]) != TypeDataFin) {
		return Frame{}, 0, 0, false
	}
	f.Type = Type(b[0])
	r := reader{b: b, off: 1}
	f.Flow = r.varint()
	f.Offset = r.varint()
	length = r.varint()
	if r.err != nil || length > MaxRecord || f.Offset+length > MaxVarint {
		return Frame{}, 0, 0, false
	}
	return f, r.off, length, true
}

// Parse decodes the frame at the start of b and returns it with the number of bytes it used.
// It never panics and allocates only to describe an error; errors wrap ErrTruncated, ErrUnknownType or ErrMalformed.
func Parse(b []byte) (f Frame, n int, err error) {
	if len(b) == 0 {
		return f, 0, ErrTruncated
	}
	f.Type = Type(b[0])
	r := reader{b: b, off: 1}
	switch f.Type {
	case TypePing, TypePong:
		f.Seq = r.varint()
	case TypeOpen:
		f.Flow = r.varint()
		f.Kind = r.byte()
		if r.err == nil && f.Kind&OpenMeta != 0 {
			f.Kind &^= OpenMeta
			l := r.varint()
			if r.err == nil && (l == 0 || l > MaxMeta) {
				r.err = ErrMalformed
			}
			f.Payload = r.bytes(int(l))
		}
		if r.err == nil && f.Kind != KindStream && f.Kind != KindPacket {
			r.err = ErrMalformed
		}
	case TypeData, TypeDataFin:
		f.Flow = r.varint()
		f.Offset = r.varint()
		l := r.varint()
		if r.err == nil && (l > MaxRecord || f.Offset+l > MaxVarint) {
			r.err = ErrMalformed
		}
		f.Payload = r.bytes(int(l))
	case TypeAck:
		f.Flow = r.varint()
		f.Seq = r.varint()
		f.Limit = r.varint()
		f.Flags = r.byte()
		if r.err == nil && (f.Flags&^(AckFin|AckOpen) != 0 || f.Limit < f.Seq) {
			r.err = ErrMalformed
		}
	case TypeMaxData:
		f.Limit = r.varint()
	case TypeReset:
		f.Flow = r.varint()
		f.Code = r.varint()
		f.Final = r.varint()
	case TypeStop:
		f.Flow = r.varint()
		f.Code = r.varint()
	case TypeJoinProof:
		copy(f.MAC[:], r.bytes(MACSize))
	case TypeClose:
		f.Code = r.varint()
	case TypeDatagram:
		f.Flow = r.varint()
		f.Seq = r.varint()
		l := r.varint()
		if r.err == nil && (l > MaxDatagram || f.Seq == 0) {
			r.err = ErrMalformed
		}
		f.Payload = r.bytes(int(l))
	case TypePathAck, TypePathAckCE:
		parsePathAck(&f, &r)
	case TypePathChallenge, TypePathResponse:
		if d := r.bytes(8); d != nil {
			f.Seq = binary.BigEndian.Uint64(d)
		}
	case TypePadding:
		l := r.varint()
		if r.err == nil && l > MaxRecord {
			r.err = ErrMalformed
		}
		f.Payload = r.bytes(int(l))
		for _, c := range f.Payload {
			if c != 0 {
				r.err = ErrMalformed // padding is zeros, so a frame re-encodes to itself
				break
			}
		}
	case TypeRoute:
		f.Seq = r.varint()
		if r.err == nil {
			nodes := 0
			n, err := walkPlan(b[r.off:], 1, &nodes)
			if err != nil {
				r.err = err
			} else {
				f.Payload = r.bytes(n)
			}
		}
	default:
		return Frame{}, 0, fmt.Errorf("%w 0x%02x", ErrUnknownType, b[0])
	}
	if r.err != nil {
		return Frame{}, 0, fmt.Errorf("%w (%v)", r.err, f.Type)
	}
	return f, r.off, nil
}

// reader walks a frame; the first error sticks so decoders stay linear.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) varint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := ReadVarint(r.b[r.off:])
	if n == 0 {
		r.err = ErrTruncated
		return 0
	}
	r.off += n
	return v
}

func (r *reader) byte() uint8 {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.err = ErrTruncated
		return 0
	}
	r.off++
	return r.b[r.off-1]
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b)-r.off {
		r.err = ErrTruncated
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

// Route plans: the tree a ROUTE frame carries (docs/wire.md, section 6).
const (
	RouteLeaf = 0 // a path, by its name in the Hello
	RouteRace = 1 // every frame on every child
	RouteBond = 2 // each frame on one child

	MaxRouteNodes = 64 // nodes in one plan
	MaxRouteDepth = 8  // levels, the root's included
	MaxRouteKids  = 16 // children of one group
)

// RouteNode is one node of a route plan: a leaf naming a path, or a Race or Bond of two or
// more nodes.
type RouteNode struct {
	Kind uint8
	Name string
	Kids []RouteNode
}

// AppendRoute appends a ROUTE frame.
func AppendRoute(b []byte, seq uint64, plan RouteNode) []byte {
	return appendPlan(AppendVarint(append(b, byte(TypeRoute)), seq), plan)
}

func appendPlan(b []byte, n RouteNode) []byte {
	b = append(b, n.Kind)
	if n.Kind == RouteLeaf {
		return append(append(b, byte(len(n.Name))), n.Name...)
	}
	b = append(b, byte(len(n.Kids)))
	for _, k := range n.Kids {
		b = appendPlan(b, k)
	}
	return b
}

// walkPlan checks the plan node at the start of b and returns its size.
func walkPlan(b []byte, depth int, nodes *int) (int, error) {
	if *nodes++; *nodes > MaxRouteNodes || depth > MaxRouteDepth {
		return 0, ErrMalformed
	}
	if len(b) < 2 {
		return 0, ErrTruncated
	}
	switch b[0] {
	case RouteLeaf:
		n := int(b[1])
		if n == 0 || n > 64 {
			return 0, ErrMalformed
		}
		if len(b) < 2+n {
			return 0, ErrTruncated
		}
		return 2 + n, nil
	case RouteRace, RouteBond:
		k := int(b[1])
		if k < 2 || k > MaxRouteKids {
			return 0, ErrMalformed
		}
		off := 2
		for range k {
			n, err := walkPlan(b[off:], depth+1, nodes)
			if err != nil {
				return 0, err
			}
			off += n
		}
		return off, nil
	}
	return 0, ErrMalformed
}

// DecodeRoute decodes the plan of a ROUTE frame that Parse accepted (its Payload).
func DecodeRoute(p []byte) (RouteNode, error) {
	nodes := 0
	n, err := walkPlan(p, 1, &nodes)
	if err != nil {
		return RouteNode{}, err
	}
	if n != len(p) {
		return RouteNode{}, ErrMalformed
	}
	node, _ := decodePlan(p)
	return node, nil
}

// decodePlan decodes a node walkPlan accepted.
func decodePlan(b []byte) (RouteNode, int) {
	n := RouteNode{Kind: b[0]}
	if n.Kind == RouteLeaf {
		l := int(b[1])
		n.Name = string(b[2 : 2+l])
		return n, 2 + l
	}
	off := 2
	for range int(b[1]) {
		k, m := decodePlan(b[off:])
		n.Kids = append(n.Kids, k)
		off += m
	}
	return n, off
}
