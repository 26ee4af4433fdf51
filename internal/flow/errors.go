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
	// (the L3 identity) was not accepted, or where it was to go refused it.
	ErrRejected = errors.New("rendr: flow rejected by peer")
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
	// metadata was not accepted, or its destination refused it. Unlike CodeRefused, the
	// bytes the flow sent were counted as any closed flow's are.
	CodeRejected = 3
)
