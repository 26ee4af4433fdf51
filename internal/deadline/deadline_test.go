package deadline

import (
	"testing"
	"time"
)

// TestOverslept: a check is late when it runs more than a sixteenth of its span (at least
// 2ms) past due; never when it has no due time or runs early.
func TestOverslept(t *testing.T) {
	due := time.Unix(1000, 0)
	for _, c := range []struct {
		now  time.Duration // after due
		span time.Duration
		want time.Duration
	}{
		{-time.Second, 400 * time.Millisecond, 0},
		{0, 400 * time.Millisecond, 0},
		{25 * time.Millisecond, 400 * time.Millisecond, 0},
		{26 * time.Millisecond, 400 * time.Millisecond, 26 * time.Millisecond},
		{2 * time.Millisecond, 10 * time.Millisecond, 0},
		{3 * time.Millisecond, 10 * time.Millisecond, 3 * time.Millisecond},
		{300 * time.Millisecond, 40 * time.Millisecond, 300 * time.Millisecond},
	} {
		if got := Overslept(due, due.Add(c.now), c.span); got != c.want {
			t.Errorf("Overslept(due, due%+v, %v) = %v, want %v", c.now, c.span, got, c.want)
		}
	}
	if got := Overslept(time.Time{}, due, time.Second); got != 0 {
		t.Errorf("no due time: %v, want 0", got)
	}
}
