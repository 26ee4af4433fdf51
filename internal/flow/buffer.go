// Send stage, storage: a stream's send buffer, which keeps every byte written until the peer
// acknowledges it, in pooled chunks that zero-copy records may share.

package flow

import (
	"sync"
	"sync/atomic"

	"github.com/rendr-go/rendr/internal/record"
)

// chunkSize is the unit stream buffers grow and shrink by. Buffers hold only the chunks their
// bytes need, so an idle flow, whose buffers are empty, holds none.
const chunkSize = 16 << 10

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

// chunk is a unit of buffer memory. Records on plain paths may refer to a send buffer's chunk
// instead of copying from it; the chunk goes back to the pool only when the buffer and every
// such record have let it go.
type chunk struct {
	b    [chunkSize]byte
	refs atomic.Int32 // the buffer's own reference, plus one per record pinning it
}

func newChunk() *chunk {
	c := chunkPool.Get().(*chunk)
	c.refs.Store(1)
	return c
}

// Unpin implements record.Pin.
func (c *chunk) Unpin() {
	if c.refs.Add(-1) == 0 {
		chunkPool.Put(c)
	}
}

// buffer is a FIFO of bytes in pooled chunks. It is not safe for concurrent use; the engine's
// lock guards every buffer.
type buffer struct {
	chunks []*chunk
	head   int // read position in chunks[0]
	n      int // bytes buffered
}

// len is the number of bytes buffered.
func (b *buffer) len() int { return b.n }

// write appends p.
func (b *buffer) write(p []byte) {
	for len(p) > 0 {
		tail := (b.head + b.n) % chunkSize
		if tail == 0 && (b.head+b.n)/chunkSize == len(b.chunks) {
			b.chunks = append(b.chunks, newChunk())
		}
		c := b.chunks[(b.head+b.n)/chunkSize]
		k := copy(c.b[tail:], p)
		b.n += k
		p = p[k:]
	}
}

// readAt copies bytes starting off bytes past the head into dst, without consuming them.
func (b *buffer) readAt(dst []byte, off int) int {
	if off >= b.n {
		return 0
	}
	want := min(len(dst), b.n-off)
	pos := b.head + off
	done := 0
	for done < want {
		c := b.chunks[pos/chunkSize]
		k := copy(dst[done:want], c.b[pos%chunkSize:])
		done += k
		pos += k
	}
	return done
}

// pin ends r with the n bytes starting off bytes past the head, by reference: each chunk they
// lie in is pinned until r is written. The bytes must not change meanwhile, and they do not:
// a buffer only appends after its end and drops from its head.
func (b *buffer) pin(r *record.Record, off, n int) {
	pos := b.head + off
	for n > 0 {
		c := b.chunks[pos/chunkSize]
		i := pos % chunkSize
		k := min(n, chunkSize-i)
		c.refs.Add(1)
		r.AppendExt(c.b[i:i+k:i+k], c)
		pos += k
		n -= k
	}
}

// pieces is how many pieces pin would make of the n bytes starting off bytes past the head:
// one per chunk they touch.
func (b *buffer) pieces(off, n int) int {
	if n <= 0 {
		return 0
	}
	pos := b.head + off
	return (pos+n-1)/chunkSize - pos/chunkSize + 1
}

// discard drops n bytes from the head, returning emptied chunks to the pool.
func (b *buffer) discard(n int) {
	n = min(n, b.n)
	b.head += n
	b.n -= n
	free := b.head / chunkSize
	if b.n == 0 {
		free = len(b.chunks)
		b.head = 0
	}
	if free > 0 {
		for i := range free {
			b.chunks[i].Unpin()
		}
		rest := copy(b.chunks, b.chunks[free:])
		clear(b.chunks[rest:])
		b.chunks = b.chunks[:rest]
		b.head %= chunkSize
	}
	if len(b.chunks) == 0 {
		b.chunks = nil // release the slice too: idle flows keep nothing
	}
}

// reset releases everything.
func (b *buffer) reset() { b.discard(b.n) }
