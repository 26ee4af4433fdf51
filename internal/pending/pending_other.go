//go:build !linux

package pending

import (
	"errors"
	"net"
)

// Set is not available here: New reports errors.ErrUnsupported, and a nil Set watches
// nothing.
type Set struct{}

// New reports errors.ErrUnsupported: the caller waits on each connection itself.
func New(Config) (*Set, error) { return nil, errors.ErrUnsupported }

// Watchable is false here: no connection can be watched.
func Watchable(net.Conn) bool { return false }

// Add watches nothing here.
func (*Set) Add(net.Conn, Done) bool { return false }

// Remove has nothing to take back.
func (*Set) Remove(net.Conn) bool { return false }

// Len is 0.
func (*Set) Len() int { return 0 }

// TimedOut is 0.
func (*Set) TimedOut() uint64 { return 0 }

// Close does nothing.
func (*Set) Close() {}
