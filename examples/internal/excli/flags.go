package excli

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
)

// ListFlag is a flag given any number of times.
type ListFlag []string

func (l *ListFlag) String() string     { return strings.Join(*l, " ") }
func (l *ListFlag) Set(v string) error { *l = append(*l, v); return nil }

// logger writes to w; debug events only when verbose. The second logger is the one to give
// rendr's Options: the same when verbose, and nil (rendr discards its debug events) when not,
// so that rendr does not build events nobody reads.
func logger(w io.Writer, verbose bool) (log, rendrLog *slog.Logger) {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	if verbose {
		rendrLog = log
	}
	return log, rendrLog
}

// listenAll opens a listener with listen on each of addrs, the repeated -listen flags of a
// serving side. When one fails, those already open are closed.
func listenAll(addrs []string, listen func(address string) (net.Listener, error)) ([]net.Listener, error) {
	var out []net.Listener
	for _, a := range addrs {
		l, err := listen(a)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("-listen %s: %w", a, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// closeAll closes every listener of lns.
func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}
