// Package record is what the flow engine hands a path: one outgoing record of frames, what it
// carries that must not be lost with it, and pins on the send-buffer memory its payload
// refers to. It sits below both, so that the engine needs no path, and a path no engine.
package record

import (
	"sync"

	"github.com/rendr-go/rendr/internal/wire"
)

// Record is one outgoing record: a 2-byte length header, then frames, with room for the AEAD
// tag. The engine appends frames to B (which starts with the header's 2 bytes) and hands the
// record to a path (path.Path.Send); the path owns it from then on.
//
// A record may end with bytes it does not copy: Ext holds slices of the engine's send
// buffers, the payload of the last DATA frame in B, and Pins keeps those buffers from being
// reused until the path is done with them. On a plain path (a secure carrier) they are written
// after B with one vectored write. On an encrypted path the record is split (docs/wire.md,
// section 5): B's frames and each Ext slice are sealed as AEAD messages of their own, straight
// from the send buffer into the record, so the payload is read once, by the cipher, instead of
// being copied into B first. Nothing can follow Ext, so a record with Ext has no Room.
type Record struct {
	B    []byte
	Ext  [][]byte
	Pins []Pin
	ext  int // bytes in Ext

	// Carried lists what the record carries that must not be lost with it, when it is for a
	// link that may lose records (a datagram path): such a link hands the list of a record
	// it declares lost back to the engine, which sends those bytes and frames again.
	Carried []Carried
	limit   int  // the most frame bytes the record may hold; 0: MaxPlaintext
	crit    bool // on a packet path: sent again until acknowledged (a JOIN_PROOF)
}

// Carried is one thing a record carries that must not be lost with it.
type Carried struct {
	Kind CarriedKind
	Flow uint64
	Off  uint64 // CarriedData: the first byte's offset
	Len  uint32 // CarriedData: how many bytes
	Fin  bool   // CarriedData: the frame was a DATA_FIN
}

// CarriedKind says what a Carried entry stands for.
type CarriedKind uint8

const (
	CarriedData    CarriedKind = iota + 1 // a DATA or DATA_FIN frame of Flow
	CarriedOpen                           // an OPEN of Flow
	CarriedAck                            // an ACK of Flow
	CarriedStop                           // a STOP of Flow
	CarriedReset                          // a RESET of Flow
	CarriedMaxData                        // the session's MAX_DATA
	CarriedRoute                          // the session's ROUTE
)

// SetLimit makes the record hold at most n bytes of frames (a datagram path's packet size).
func (r *Record) SetLimit(n int) { r.limit = n }

// Cap is how many bytes of frames the record holds when empty.
func (r *Record) Cap() int {
	if r.limit > 0 {
		return min(r.limit, wire.MaxPlaintext)
	}
	return wire.MaxPlaintext
}

// Pin holds memory a Record refers to; Unpin lets it go once the record is written or
// dropped. transport.Pin is the same interface, so a carrier's lent datagram is one.
type Pin interface{ Unpin() }

// Frames returns the frames appended so far (not counting Ext).
func (r *Record) Frames() []byte { return r.B[2:] }

// Room is how many more frame bytes fit.
func (r *Record) Room() int {
	if r.ext > 0 {
		return 0
	}
	max := wire.MaxPlaintext
	if r.limit > 0 {
		max = min(max, r.limit)
	}
	return 2 + max - len(r.B)
}

// Len is the record's size before sealing: B and Ext.
func (r *Record) Len() int { return len(r.B) + r.ext }

// AppendExt ends the record with p, which stays owned by pin's holder until Unpin.
func (r *Record) AppendExt(p []byte, pin Pin) {
	r.Ext = append(r.Ext, p)
	r.Pins = append(r.Pins, pin)
	r.ext += len(p)
}

var recordPool = sync.Pool{New: func() any {
	return &Record{B: make([]byte, 0, 2+wire.MaxSplitBody)}
}}

// New returns an empty record from the pool.
func New() *Record {
	r := recordPool.Get().(*Record)
	r.B = append(r.B[:0], 0, 0)
	return r
}

// Release unpins what r refers to and returns it to the pool. r must not be used afterwards.
func (r *Record) Release() {
	r.Unpin()
	r.B = r.B[:0]
	r.Carried = r.Carried[:0]
	r.limit = 0
	r.crit = false
	recordPool.Put(r)
}

// Unpin lets go of Ext once its bytes are in B (the path sealed or copied them there).
func (r *Record) Unpin() {
	for _, p := range r.Pins {
		p.Unpin()
	}
	clear(r.Ext)
	clear(r.Pins)
	r.Ext, r.Pins, r.ext = r.Ext[:0], r.Pins[:0], 0
}

// ExtLen is how many bytes Ext holds.
func (r *Record) ExtLen() int { return r.ext }

// Critical reports whether a packet path sends the record again until it is acknowledged (a
// JOIN_PROOF); SetCritical makes it so.
func (r *Record) Critical() bool { return r.crit }

// SetCritical makes a packet path send the record again until it is acknowledged.
func (r *Record) SetCritical() { r.crit = true }

// SplitOverhead is what sealing a record whose payload lies in ext pieces (Record.Ext) in
// parts adds to it (docs/wire.md section 5): a part count, a length per part and a tag per
// part beyond the first. A record that leaves no room for it is copied into one part instead.
func SplitOverhead(ext int) int {
	k := 1 + ext
	return 1 + 2*k + wire.TagSize*(k-1)
}
