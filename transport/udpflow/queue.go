package udpflow

// ring is a connection's receive queue: datagrams in arrival order. It grows as datagrams
// wait, doubling up to the connection's bound, instead of being allocated at its bound when
// the connection starts: a connection nobody has authenticated yet may hold a few datagrams
// only, and a connection whose reader keeps up never needs more than a few slots. Its owner
// locks around every call.
type ring struct {
	buf  []inbound // len(buf) is the capacity, a power of two
	head int
	n    int
}

// push adds in at the tail, growing up to limit slots; false when limit are already queued.
func (r *ring) push(in inbound, limit int) bool {
	if r.n >= limit {
		return false
	}
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = in
	r.n++
	return true
}

// grow doubles the ring: push grows it only while it holds fewer than limit, so it ends at
// the power of two at or above limit.
func (r *ring) grow() {
	b := make([]inbound, max(1, 2*len(r.buf)))
	for i := range r.n {
		b[i] = r.buf[(r.head+i)&(len(r.buf)-1)]
	}
	r.buf, r.head = b, 0
}

// pop takes the datagram at the head; ok is false when the ring is empty.
func (r *ring) pop() (in inbound, ok bool) {
	if r.n == 0 {
		return in, false
	}
	slot := &r.buf[r.head]
	in, *slot = *slot, inbound{} // nothing stays reachable from a free slot
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return in, true
}
