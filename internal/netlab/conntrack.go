package netlab

// FlushConntrack deletes every IPv4 connection-tracking entry in the namespace of side, as
// `conntrack -F` from the conntrack package does, so that the next packet of each flow is
// tracked (and NATed) afresh: with a `masquerade random` rule, a NAT rebinding to a new port.
// It speaks ctnetlink directly, so the lab needs no tool beyond ip, tc and nft.
func (l *Lab) FlushConntrack(side Side) error {
	ns, err := l.nsName(side)
	if err != nil {
		return err
	}
	_, err = within(ns, func() (nopCloser, error) { return nopCloser{}, flushConntrack() })
	return err
}
