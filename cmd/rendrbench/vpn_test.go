package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

// iperfJSON is the shape of iperf3 3.12's -J report, cut to what parseIperf reads and a
// little around it.
const iperfJSON = `{
	"start": {"connected": [{"socket": 5}], "test_start": {"protocol": "TCP", "omit": 2}},
	"intervals": [{"sum": {"bytes": 1000, "omitted": true}}],
	"end": {
		"streams": [],
		"sum_sent": {"start": 0, "end": 8.0, "seconds": 8.0, "bytes": 1073741824, "bits_per_second": 1.07e9, "retransmits": 7, "sender": true},
		"sum_received": {"start": 0, "end": 8.5, "seconds": 8.5, "bytes": 1062500000, "bits_per_second": 1e9, "sender": true}
	}
}`

func TestParseIperf(t *testing.T) {
	r, err := parseIperf([]byte(iperfJSON))
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != 1062500000 || r.Seconds != 8.5 || r.Retransmits != 7 {
		t.Fatalf("got %+v, want the receiver's bytes and seconds and the sender's retransmissions", r)
	}
	if got := r.mbit(); math.Abs(got-1000) > 1e-9 {
		t.Errorf("mbit() = %v, want 1000", got)
	}
}

func TestParseIperfFailures(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"iperf3's own error", `{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}`, "Connection refused"},
		{"nothing received", `{"end": {"sum_received": {"bytes": 0, "seconds": 0}}}`, "received 0 bytes"},
		{"no JSON", "iperf3: error - unable to connect", "JSON"},
		{"empty", "", "JSON"},
	} {
		_, err := parseIperf([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestCPUPerGiB(t *testing.T) {
	if got := cpuPerGiB(3*time.Second, 2<<30); got != 1.5 {
		t.Errorf("3 s for 2 GiB: %v s/GiB, want 1.5", got)
	}
	if got := cpuPerGiB(time.Second, 0); got != 0 {
		t.Errorf("nothing moved: %v, want 0", got)
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with a space and a ')' of its own: fields count from the last ')'.
	const stat = "4242 (wg (x) go) S 1 4242 4242 0 -1 4194560 1234 0 0 0 317 58 0 0 20 0 9 0 123456 1000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	u, s, err := parseProcStat(stat)
	if err != nil {
		t.Fatal(err)
	}
	if u != 317 || s != 58 {
		t.Errorf("utime, stime = %d, %d; want 317, 58", u, s)
	}
	for _, bad := range []string{"", "4242 (x S 1", "4242 (x) S 1 2 3"} {
		if _, _, err := parseProcStat(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
