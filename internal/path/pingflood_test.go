package path

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/rendr-go/rendr/internal/wire"
)

// pingRecord is one plain record holding n PING frames.
func pingRecord(n int) []byte {
	b := []byte{0, 0}
	for i := range n {
		b = wire.AppendPing(b, uint64(i%60+1))
	}
	binary.BigEndian.PutUint16(b, uint16(len(b)-2))
	return b
}

// blockedPath starts a path over a synchronous pipe whose far end reads nothing yet, so the
// path's writer blocks on its first probe, and then feeds the path one record of n PINGs.
func blockedPath(t *testing.T, n int) (p *Path, far net.Conn) {
	near, far := net.Pipe()
	p = New(1, near, nil, nil, Config{}, newHandler())
	p.Start()
	synctest.Wait() // the first probe is queued and the writer blocks writing it
	if _, err := far.Write(pingRecord(n)); err != nil {
		t.Fatal(err)
	}
	synctest.Wait() // the reader has handled every PING
	return p, far
}

// A peer that sends PINGs and does not read makes a path queue one pooled record, sized for
// the largest record, per PING: a couple of input bytes pin 64 KiB each. Control records must
// stay bounded like the data queue.
func TestPongQueueBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pings = 48
		p, far := blockedPath(t, pings)
		p.mu.Lock()
		queued, pinned := len(p.mu.pq), 0
		for _, r := range p.mu.pq {
			pinned += cap(r.B)
		}
		p.mu.Unlock()
		p.Close(nil)
		far.Close()
		p.Wait()
		if pinned > p.cfg.QueueBytes {
			t.Fatalf("%d input bytes of PINGs pinned %d bytes in %d queued control records; "+
				"the data queue's bound is %d", len(pingRecord(pings)), pinned, queued, p.cfg.QueueBytes)
		}
	})
}

// More than 64 control records queued at once make the writer slice its data queue with a
// negative bound: the process panics. The scenario runs in a child process so that the panic
// fails this test instead of killing the test binary.
func TestManyPingsNoPanic(t *testing.T) {
	if os.Getenv("RENDR_TEST_CHILD") == "pings" {
		synctest.Test(t, func(t *testing.T) {
			p, far := blockedPath(t, 65)
			drained := make(chan struct{})
			go func() {
				io.Copy(io.Discard, far) // the writer unblocks and takes every queued PONG
				close(drained)
			}()
			synctest.Wait()
			p.Close(nil)
			p.Wait()
			far.Close()
			<-drained
		})
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestManyPingsNoPanic$", "-test.count=1")
	cmd.Env = append(os.Environ(), "RENDR_TEST_CHILD=pings")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "panic:") {
		t.Fatalf("a record of 65 PINGs crashed the process (%v):\n%s", err, firstLines(string(out), 12))
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
