package metrics_test

import (
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/debugpage"
	"github.com/rendr-go/rendr/metrics"
	"github.com/rendr-go/rendr/status"
	"github.com/rendr-go/rendr/trace"
	"github.com/rendr-go/rendr/transport/tcp"
)

// The README's wiring: metrics on the program's own registry, the trace to a file, and the
// debug page, all fed by one Trace function.
func Example() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	traceFile, _ := os.Create("rendr-trace.jsonl")
	m, page, tw := metrics.New(), debugpage.New(), trace.New(traceFile)
	d, _ := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("wifi", tcp.Dialer("203.0.113.7:7001")),
		Options: rendr.Options{
			Trace: func(ev status.Event) { m.Trace(ev); page.Trace(ev); tw.Event(ev) },
		}})
	m.WatchDialer(d)
	page.WatchDialer(d)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mux := http.NewServeMux() // served on an operators' address
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/debug/rendr", page)
	// ... and when done:
	d.Close()
	tw.Close()
}
