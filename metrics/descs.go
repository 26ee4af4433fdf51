// The metrics' names, help texts and labels.

package metrics

import "github.com/prometheus/client_golang/prometheus"

var (
	sideL    = []string{"side"}
	sessionL = []string{"side", "session"}
	pathL    = []string{"side", "session", "path"}
)

func desc(name, help string, labels []string, more ...string) *prometheus.Desc {
	return prometheus.NewDesc("rendr_"+name, help, append(append([]string(nil), labels...), more...), nil)
}

var (
	descSessions = desc("sessions", "Live sessions.", sideL)
	descOmitted  = desc("sessions_omitted", "Live sessions exported without series of their own (past the collector's MaxSessions).", sideL)

	descFlows            = desc("session_flows", "Flows open in the session.", sessionL)
	descMigrations       = desc("session_migrations_total", "Migrations of the session's traffic, by cause.", sessionL, "cause")
	descSpurious         = desc("session_spurious_moves_total", "Moves for a stall (or deaths by silence) that proved spurious.", sessionL)
	descRewinds          = desc("session_rewinds_total", "Path changes that sent the flows back to their acknowledged offsets.", sessionL)
	descResent           = desc("session_resent_bytes_total", "Flow bytes sent again: after a rewind, or reported lost by a datagram path.", sessionL)
	descDroppedDatagrams = desc("session_dropped_datagrams_total", "Datagrams of packet flows dropped, by cause.", sessionL, "cause")
	descDuplicateBytes   = desc("session_duplicate_bytes_total", "Stream bytes received again after their delivery, dropped.", sessionL)
	descGapFrames        = desc("session_gap_dropped_frames_total", "DATA frames dropped ahead of a gap (the peer sends them again).", sessionL)
	descRefusedFlows     = desc("session_refused_flows_total", "Flows the listening side refused (backlog, flow limit or memory).", sessionL)
	descViolations       = desc("session_protocol_violations_total", "Frames that broke the protocol and closed their path.", sessionL)

	descPathState    = desc("path_state", "1 for the path's current state, 0 for the others.", pathL, "state")
	descPathActive   = desc("path_active", "1 while the policy sends on the path.", pathL)
	descPathSRTT     = desc("path_srtt_seconds", "Smoothed round trip of the path's probes.", pathL)
	descPathJitter   = desc("path_rttvar_seconds", "Round-trip variation (rttvar) of the path.", pathL)
	descPathMinRTT   = desc("path_min_rtt_seconds", "Least round trip the path showed.", pathL)
	descPathLoss     = desc("path_loss_ratio", "Fraction of probes answered late or not at all, smoothed.", pathL)
	descPathSent     = desc("path_sent_bytes_total", "Carrier bytes written on the path's current carrier, headers and tags included.", pathL)
	descPathRecv     = desc("path_received_bytes_total", "Carrier bytes read on the path's current carrier.", pathL)
	descPathDials    = desc("path_dials_total", "Connection attempts of the path (dialing side).", pathL)
	descPathSpurious = desc("path_spurious_moves_total", "Moves off the path for a stall that proved spurious.", pathL)
	descPktSent      = desc("path_sent_packets_total", "Packets sent on a datagram path.", pathL)
	descPktLost      = desc("path_lost_packets_total", "Packets of a datagram path declared lost.", pathL)
	descPktForged    = desc("path_forged_packets_total", "Datagrams received on the path that did not authenticate, dropped.", pathL)
	descPktMarked    = desc("path_marked_packets_total", "Packets that met a filling receive queue: this side's (direction sent) or the peer's (received).", pathL, "direction")
	descPktRebinds   = desc("path_rebinds_total", "Moves of a datagram path to a new peer address (NAT rebinding).", pathL)
	descPktMTU       = desc("path_mtu_bytes", "Datagram size a datagram path uses.", pathL)
	descPktWindow    = desc("path_congestion_window_bytes", "Congestion window of a datagram path.", pathL)
	descPktInFlight  = desc("path_in_flight_bytes", "Bytes of a datagram path sent and not yet acknowledged or declared lost.", pathL)

	descPeers        = desc("listener_peers", "Distinct peer keys among the live sessions.", nil)
	descHandshakes   = desc("listener_handshakes_total", "Handshakes that reached the Diffie-Hellman.", nil)
	descHandshaking  = desc("listener_handshaking", "Carriers in their handshake now.", nil)
	descCookies      = desc("listener_cookies_sent_total", "Cookie replies sent while under load.", nil)
	descRefused      = desc("listener_refused_handshakes_total", "Carriers and handshakes turned away, by reason.", nil, "reason")
	descMemUsed      = desc("listener_memory_used_bytes", "Memory budget reserved by sessions, paths and flows.", nil)
	descMemLimit     = desc("listener_memory_limit_bytes", "The listener's memory budget.", nil)
	descEgressActive = desc("listener_egress_active", "Flows carried on by the Egress now.", nil)
	descEgress       = desc("listener_egress_total", "Flows handed to the Egress, by outcome.", nil, "outcome")

	descEvents           = desc("events_total", "Engine events seen through Trace, by kind.", sideL, "kind")
	descMigrationsTraced = desc("migrations_total", "Migrations seen through Trace, by cause, over every session.", sideL, "cause")
	descRefusedTraced    = desc("handshake_refusals_total", "Handshakes refused seen through Trace, by reason (listening side).", nil, "reason")
)

var allDescs = []*prometheus.Desc{
	descSessions, descOmitted,
	descFlows, descMigrations, descSpurious, descRewinds, descResent, descDroppedDatagrams, descDuplicateBytes,
	descGapFrames, descRefusedFlows, descViolations,
	descPathState, descPathActive, descPathSRTT, descPathJitter, descPathMinRTT, descPathLoss, descPathSent,
	descPathRecv, descPathDials, descPathSpurious, descPktSent, descPktLost, descPktForged, descPktMarked,
	descPktRebinds, descPktMTU, descPktWindow, descPktInFlight,
	descPeers, descHandshakes, descHandshaking, descCookies, descRefused, descMemUsed, descMemLimit,
	descEgressActive, descEgress,
	descEvents, descMigrationsTraced, descRefusedTraced,
}
