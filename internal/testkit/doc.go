// Package testkit holds the rigs rendr's own tests share. Over real loopback carriers: Rig
// (a Listener and a Dialer over tcp, quic, gvisor or udpflow, with relays to kill and sources
// that show what the listener sent), a hooking TCP Proxy, and kill plans (KillPlan, Killer)
// that end the path carrying traffic while bytes flow. In memory: MemLab, a Listener and a
// Dialer over shaped testlink paths for testing/synctest bubbles. In network namespaces:
// NetLab. Around them: SHA-256 checked transfers (Transfer, Both), records of migrations, an
// slog handler that keeps logged errors, and readers of a session's status.
//
// It is test support only: nothing in it keeps global state, and every goroutine it starts
// ends with the value that started it.
package testkit
