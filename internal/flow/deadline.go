// Application stage: a helper for the deadlines Read, Write and the datagram calls wait on.

package flow

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
