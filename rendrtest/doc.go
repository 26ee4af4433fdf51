// Package rendrtest provides fault-injecting relays for testing a program's failover over
// real sockets, as net/http/httptest provides servers for testing HTTP clients.
//
// A Relay listens on a loopback port and forwards every TCP connection it accepts to a
// target. A test puts one in front of each path: the program dials the relay's Addr instead
// of the target, and the test breaks the path while the program runs:
//
//   - CloseConns ends the connections open now with a FIN each way (the ends read EOF);
//     ResetConns ends them with an RST (ECONNRESET). New connections pass.
//   - Refuse resets every new connection as soon as it arrives.
//   - Blackhole swallows the bytes going one way or both: nothing errors, nothing moves, the
//     connections stay open.
//   - Delay adds one-way latency; Rate caps the bytes per second each way.
//
// Refuse, Blackhole, Delay and Rate last until Heal, and apply to every connection through
// the relay, those open now and those made later.
//
// A UDPRelay does the same for datagram carriers (QUIC, rendr's udpflow): blackholes, loss,
// delay and a rate, per direction, and Rebind, which makes the target see every client
// arrive from a new port, as after a NAT's mapping expired.
//
// A failover test in brief, with the target of each path behind a relay of its own:
//
//	primary, _ := rendrtest.NewRelay(l1.Addr().String())
//	defer primary.Close()
//	backup, _ := rendrtest.NewRelay(l2.Addr().String())
//	defer backup.Close()
//	d, _ := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
//		Root: rendr.Selector("uplinks",
//			rendr.Path("primary", tcp.Dialer(primary.Addr())),
//			rendr.Path("backup", tcp.Dialer(backup.Addr())),
//		)})
//	// ... start a flow, then while it streams:
//	primary.Blackhole(rendrtest.Both) // the flow must go on over the backup, every byte intact
//
// The relays are for tests: they listen on loopback (unless ListenAddr says otherwise), keep
// no global state, and stop every goroutine they started when closed.
//
// # Limits
//
// A Relay ends TCP on each side: a connection through it is two kernel connections and a
// copy between them, not packets through a router. So the ends' TCP never sees the faults as
// loss: a byte the relay read is acknowledged to its sender whatever happens to it next. A
// blackhole therefore discards bytes the sender believes delivered, and a connection that
// lost any cannot carry on: Heal resets it. A dialer's connect to the relay always succeeds
// (the kernel answers before the relay sees the connection) unless the relay is closed;
// Refuse, or a target that does not answer, resets the connection instead. A delay holds at
// most 2 MiB per connection and direction, so it also bounds each connection's throughput to
// 2 MiB per delay. A rate is shared by all connections through the relay.
//
// A UDPRelay keeps a mapping per client address until Rebind or Close (it never expires
// them on its own), forwards datagrams of up to 64 KiB, and queues at most 1024 datagrams
// per direction for a delay or a rate.
package rendrtest
