package rendr

import "testing"

// TestFoundingSessionIsNotDeserted: a listener's session whose founding path is not attached
// yet has no path, yet it is not the remains of a restarted peer: another instance of the same
// key arriving in that moment must not fail it with ErrPeerRestarted. Only a session that had
// a path and lost every one is.
func TestFoundingSessionIsNotDeserted(t *testing.T) {
	o := Options{}
	s := newSession(o.common(MustNewKey()), [16]byte{1}, MustNewKey().Public(), false, nil, nil)
	defer s.fail(ErrClosed)
	if s.deserted() {
		t.Fatal("a session still being founded counts as deserted")
	}
	s.mu.Lock()
	s.mu.everUp = true // its path came and went
	s.mu.Unlock()
	if !s.deserted() {
		t.Fatal("a session that lost every path does not count as deserted")
	}
}
