package budget

import (
	"sync"
	"testing"
)

func TestNested(t *testing.T) {
	root := New(100, nil)
	a, b := New(60, root), New(60, root)
	if !a.Reserve(60) || a.Reserve(1) {
		t.Fatal("a: 60 fits, 61 does not")
	}
	if !b.Reserve(40) {
		t.Fatal("b: 40 fits in the root's remaining 40")
	}
	if b.Reserve(1) {
		t.Fatal("b: the root is full")
	}
	if b.Used() != 40 || root.Used() != 100 {
		t.Fatalf("a refusal by the root left b at %d, root at %d", b.Used(), root.Used())
	}
	if a.Refused() != 1 || b.Refused() != 1 || root.Refused() != 1 {
		t.Fatalf("refusals a %d b %d root %d", a.Refused(), b.Refused(), root.Refused())
	}
	a.Release(60)
	if !b.Reserve(20) || b.Used() != 60 || root.Used() != 60 {
		t.Fatalf("after a's release: b %d root %d", b.Used(), root.Used())
	}
	b.Release(60)
	if root.Used() != 0 {
		t.Fatalf("root at %d after every release", root.Used())
	}
}

func TestNilIsUnbounded(t *testing.T) {
	var p *Pool
	if !p.Reserve(1<<62) || p.Used() != 0 || p.Refused() != 0 {
		t.Fatal("a nil pool must take anything and count nothing")
	}
	p.Release(5)
	child := New(10, nil)
	if !child.Reserve(10) || child.Reserve(1) {
		t.Fatal("a pool with no parent is bounded by itself alone")
	}
}

func TestConcurrent(t *testing.T) {
	root := New(1000, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 8 {
		p := New(400, root)
		wg.Go(func() {
			for range 1000 {
				if p.Reserve(1) {
					mu.Lock()
					got++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if got != 1000 || root.Used() != 1000 {
		t.Fatalf("%d reservations taken, root used %d: want exactly the limit", got, root.Used())
	}
}
