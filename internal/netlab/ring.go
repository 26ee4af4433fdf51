package netlab

import "sync/atomic"

// ring is the memory of one delay line. Packets leave a line in the order they came, so one
// buffer used as a FIFO holds them all: the reader reads each packet straight into the free
// space after the last one, the writer writes it out from there and hands the space back.
// Nothing is allocated or copied per packet, and the buffer's size is the bound on the bytes
// a line holds.
//
// Positions count bytes since the start and never wrap (2^63 bytes are centuries at any
// rate); a position's place in the buffer is the position modulo its size. A packet never
// straddles the end: when the room left before the end is too small, the reader skips it,
// and those bytes come back with the packet after them.
//
// The reader alone moves tail; the writer alone moves head, in the order it releases the
// packets. The atomic head orders the writer's last use of a region before the reader's next
// one.
type ring struct {
	buf  []byte
	tail int64        // the first free position; the reader's
	head atomic.Int64 // the first position still held by a packet
}

func newRing(size int) *ring { return &ring{buf: make([]byte, size)} }

// reserve returns room for n bytes at the tail and the position where it starts, or nil
// when the ring holds too much for n more bytes. Nothing is taken until commit.
func (r *ring) reserve(n int) (int64, []byte) {
	size := int64(len(r.buf))
	free := size - (r.tail - r.head.Load())
	start, off := r.tail, r.tail%size
	if room := size - off; room < int64(n) {
		free -= room
		start, off = start+room, 0
	}
	if free < int64(n) {
		return 0, nil
	}
	return start, r.buf[off : off+int64(n)]
}

// commit takes the bytes from the last reserve's start to end.
func (r *ring) commit(end int64) { r.tail = end }

// at returns the bytes a packet committed from start to end occupies.
func (r *ring) at(start, end int64) []byte {
	off := start % int64(len(r.buf))
	return r.buf[off : off+end-start]
}

// release hands back everything up to end: the packet ending there has left, and so have
// all before it.
func (r *ring) release(end int64) { r.head.Store(end) }
