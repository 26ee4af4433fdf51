// Package testkit holds the rigs rendr's own tests share over real loopback carriers: SHA-256
// checked transfers, a hooking TCP proxy, kill plans that end the path carrying traffic while
// bytes flow, records of migrations, and readers of a session's status. It is test support
// only: nothing in it keeps global state, and every goroutine it starts ends with the value
// that started it.
package testkit
