package excli

import (
	"io"
	"net"
	"sync"

	"github.com/rendr-go/rendr"
)

// Splice copies both ways between the application's TCP connection and its flow until both
// directions have ended, then closes both, and returns the first failure. An end of stream is
// passed on as a half-close (CloseWrite), so a client that shuts its sending side still reads
// the whole reply. A failure either way aborts both: a reset flow (the destination reset its
// connection, or it could not be reached) resets the application's connection, and an
// application that reset its connection resets the flow, so the far side's destination sees
// an RST too.
func Splice(app net.Conn, f *rendr.Conn) error {
	var once sync.Once
	var first error
	abort := func(err error) {
		once.Do(func() {
			first = err
			if tc, ok := app.(*net.TCPConn); ok {
				tc.SetLinger(0) // Close sends an RST
			}
			app.Close()
			f.Reset()
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// Flow to application.
		if _, err := io.Copy(app, f); err != nil {
			abort(err)
			return
		}
		closeWrite(app)
	})
	// Application to flow.
	if _, err := io.Copy(f, app); err != nil {
		abort(err)
	} else {
		f.CloseWrite()
	}
	wg.Wait()
	app.Close()
	f.Close()
	return first
}

// closeWrite half-closes c where it can, and closes it where it cannot.
func closeWrite(c net.Conn) {
	if hc, ok := c.(interface{ CloseWrite() error }); ok {
		hc.CloseWrite()
		return
	}
	c.Close()
}
