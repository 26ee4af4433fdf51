// Application stage: the errors and reset codes a Stream reports.

package flow

import (
	"errors"
	"fmt"
	"net"
	"os"
)

// Errors a Stream returns. Local closes wrap net.ErrClosed; deadlines are net.Errors with
// Timeout() true wrapping os.ErrDeadlineExceeded.
var (
	// ErrClosed: the stream was closed locally.
	ErrClosed = fmt.Errorf("rendr: flow closed: %w", net.ErrClosed)
	// ErrWriteClosed: Write after CloseWrite.
	ErrWriteClosed = errors.New("rendr: write after CloseWrite")
	// ErrReset: the peer abandoned its direction of the flow (it closed without delivering),
	// or refused the flow.
	ErrReset = errors.New("rendr: flow reset by peer")
	// ErrStopped: the peer will read no more (it closed the flow); writes cannot be delivered.
	ErrStopped = errors.New("rendr: flow stopped by peer")
	// ErrRejected: the listening side turned the flow down after it arrived: its metadata
	// (the L3 identity) was not accepted, or the listener would not carry it on. The errors
	// below say more, and each matches ErrRejected too.
	ErrRejected = errors.New("rendr: flow rejected by peer")
	// ErrDestRefused: where the flow was to go refused the connection (a TCP RST).
	ErrDestRefused = fmt.Errorf("rendr: the destination refused the connection: %w", ErrRejected)
	// ErrDestUnreachable: where the flow was to go cannot be reached from the listening side
	// (no route, host or network unreachable).
	ErrDestUnreachable = fmt.Errorf("rendr: the destination is unreachable: %w", ErrRejected)
	// ErrDestTimeout: where the flow was to go did not answer in time.
	ErrDestTimeout = fmt.Errorf("rendr: the destination did not answer: %w", ErrRejected)
	// ErrDestReset: the connection the flow was carried on to was reset by its far end.
	ErrDestReset = fmt.Errorf("rendr: the destination reset the connection: %w", ErrReset)
	// ErrTooManyFlows: the session's flow limit is reached.
	ErrTooManyFlows = errors.New("rendr: too many flows")
	// ErrOpening: MaxOpening flows wait for the peer to answer their OPEN; WaitOpening waits
	// for room.
	ErrOpening = errors.New("rendr: too many flows opening at once")
	// ErrFlowControl: the peer sent beyond the window it was given.
	ErrFlowControl = errors.New("rendr: flow control violated by peer")
)

// timeoutError is returned when a deadline passes. It is returned bare, never wrapped, because
// callers (nettest among them) check it with a type assertion to net.Error.
type timeoutError struct{}

func (timeoutError) Error() string { return "rendr: i/o timeout" }
func (timeoutError) Timeout() bool { return true }
func (timeoutError) Unwrap() error { return os.ErrDeadlineExceeded }

// Temporary is deprecated in net.Error, which still declares it: without it the error is not
// a net.Error. It answers as the standard library's own deadline error
// (os.ErrDeadlineExceeded) does; callers should use Timeout or errors.Is.
func (timeoutError) Temporary() bool { return true }

// ErrTimeout is the deadline error.
var ErrTimeout net.Error = timeoutError{}

// Reset codes carried by RESET and STOP.
const (
	CodeClosed  = 0 // the application closed the flow
	CodeRefused = 1 // the listener refused the flow (accept backlog full, or closing)
	CodeUnknown = 2 // the flow does not exist (any more)
	// CodeRejected: the listening side turned the flow down after taking it (Reject): its
	// metadata was not accepted, or it would not carry the flow on. Unlike CodeRefused, the
	// bytes the flow sent were counted as any closed flow's are. The codes after it say why
	// the destination of a flow that stands for an IP connection was not reached.
	CodeRejected        = 3
	CodeDestRefused     = 4 // the destination refused the connection
	CodeDestUnreachable = 5 // no route to the destination
	CodeDestTimeout     = 6 // the destination did not answer
	CodeDestReset       = 7 // the connection to the destination was reset after it was made
)

// codeErr is what a flow's reads or writes return after the peer's RESET or STOP with code:
// the error of a rejection, or otherwise (ErrReset or ErrStopped).
func codeErr(code uint64, otherwise error) error {
	switch code {
	case CodeRejected:
		return ErrRejected
	case CodeDestRefused:
		return ErrDestRefused
	case CodeDestUnreachable:
		return ErrDestUnreachable
	case CodeDestTimeout:
		return ErrDestTimeout
	case CodeDestReset:
		return ErrDestReset
	}
	return otherwise
}
