// Package pending holds stream carriers that have not yet sent a whole first message, without
// a goroutine each.
//
// A listener that starts a goroutine per accepted connection pays a stack (kilobytes) for
// every peer that connects and then says nothing, and a slow-loris flood is made of exactly
// those. A Set instead watches each connection's socket in one readiness poller of its own
// and only hands a connection on once the kernel holds its whole first message, so the
// handshake that follows reads it without waiting. Until then a connection costs its socket,
// the net.Conn Go made for it and one small entry here: a few hundred bytes of user memory.
//
// The Set is what the listener uses on Linux; elsewhere New reports errors.ErrUnsupported and
// the listener keeps a goroutine per handshake.
package pending

import "time"

// Need tells, from the first Head bytes a peer sent, how many bytes its whole first message
// takes. 0 means the bytes already show the message is not one the reader will take (a wrong
// preface, a length out of bounds): the reader may as well be handed the connection now, to
// fail it at once.
type Need func(head []byte) int

// Config is what a Set watches for.
type Config struct {
	Head    int           // bytes Need looks at; at most 64
	Need    Need          // the whole message's size, from the head
	Timeout time.Duration // how long a connection may take to send it, from Add
}

// Done is called once for every connection Add took (unless Remove took it back), from the
// Set's goroutine: ready is true when the whole first message (or the peer's end of the
// stream, or an error the reader will see) is there to read, false when the connection ran
// out of time or the Set was closed. Done must not block; it hands the connection on.
type Done func(ready bool)

// maxHead bounds Config.Head: a peek buffer lives on the poller's stack.
const maxHead = 64
