// The HTML view: tables, no script, refreshed by the browser's own reload.

package debugpage

import (
	"fmt"
	"html/template"
	"time"

	"github.com/rendr-go/rendr/trace"
)

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"ms":    func(v float64) string { return fmt.Sprintf("%.2f", v) },
	"pct":   func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) },
	"short": func(id string) string { return id[:min(len(id), 8)] },
	"clock": func(t time.Time) string { return t.Format("15:04:05.000") },
	"what":  what,
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>rendr</title>
<style>
body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#eee}
.up{color:#070}.suspect{color:#a60}.down{color:#b00}.connecting{color:#666}
</style></head><body>
<h1>rendr</h1>
<p>As of {{clock .Time}}. <a href="?format=json">JSON</a></p>
{{with .Dialer}}<h2>Dialer: session {{short .ID}}</h2>{{template "session" .}}{{end}}
{{with .Listener}}<h2>Listener</h2>
<table><tr><th>sessions</th><th>peers</th><th>handshakes</th><th>handshaking</th><th>unknown key</th><th>replayed</th><th>bad mac1</th><th>timeouts</th><th>memory used</th></tr>
<tr><td>{{.Stats.Sessions}}</td><td>{{.Stats.Peers}}</td><td>{{.Stats.Handshakes}}</td><td>{{.Stats.Handshaking}}</td><td>{{.Stats.UnknownKey}}</td><td>{{.Stats.Replayed}}</td><td>{{.Stats.BadMAC1}}</td><td>{{.Stats.HandshakeTimeouts}}</td><td>{{.Stats.MemoryUsed}} / {{.Stats.MemoryLimit}}</td></tr></table>
{{range .Sessions}}<h3>Session {{short .ID}}</h3>{{template "session" .}}{{end}}
{{if .Omitted}}<p>and {{.Omitted}} more sessions, not shown.</p>{{end}}
{{end}}
<h2>Recent events</h2>
<table><tr><th>time</th><th>side</th><th>session</th><th>event</th><th>path</th><th>what</th></tr>
{{range .Recent}}<tr><td>{{clock .Time}}</td><td>{{.Side}}</td><td>{{short .Session}}</td><td>{{.Kind}}</td><td>{{.Path}}</td><td>{{what .}}</td></tr>
{{else}}<tr><td colspan="6">none yet</td></tr>{{end}}
</table>
</body></html>
{{define "session"}}<p>{{.Flows}} flows, {{.Migrations}} migrations{{range $c, $n := .Moves}} ({{$c}}: {{$n}}){{end}}, {{.Rewinds}} rewinds, {{.Resent}} bytes resent.</p>
<table><tr><th>path</th><th>id</th><th>state</th><th>active</th><th>tier</th><th>srtt ms</th><th>jitter ms</th><th>loss</th><th>sent</th><th>received</th><th>remote</th><th>last error</th></tr>
{{range .Paths}}<tr><td>{{.Name}}</td><td>{{.ID}}</td><td class="{{.State}}">{{.State}}</td><td>{{if .Active}}yes{{end}}</td><td>{{.Tier}}</td><td>{{ms .SRTTms}}</td><td>{{ms .JitterMs}}</td><td>{{pct .Loss}}</td><td>{{.BytesSent}}</td><td>{{.BytesRecv}}</td><td>{{.Remote}}</td><td>{{.LastError}}</td></tr>
{{end}}</table>{{end}}`))

// what sums up an event in a few words.
func what(r trace.Record) string {
	switch {
	case r.Kind == "migration":
		return fmt.Sprintf("%s: %s -> %s", r.Cause, r.From, r.To)
	case r.Kind == "rewind":
		return fmt.Sprintf("%d bytes of %d flows again", r.Bytes, r.Flows)
	case r.Reason != "" && r.Err != "":
		return r.Reason + ": " + r.Err
	case r.Reason != "":
		return r.Reason
	}
	return r.Err
}
