package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// An attacker process must run at attackerNice in every thread, those its runtime started
// before main included, and the process that started it must keep its own priority.
func TestAtLowestPriority(t *testing.T) {
	lo0, hi0, err := threadNice(0)
	if err != nil {
		t.Fatal(err)
	}
	if hi0 >= attackerNice {
		t.Fatalf("this process already has a thread at nice %d: nothing to tell apart", hi0)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), nicedChildEnv+"=1")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v: %s", err, out.Bytes())
	}
	var n, lo, hi int
	if _, err := fmt.Sscan(out.String(), &n, &lo, &hi); err != nil {
		t.Fatalf("child printed %q: %v", out.Bytes(), err)
	}
	if n < 1+extraThreads {
		t.Fatalf("child had %d threads, want at least %d", n, 1+extraThreads)
	}
	if lo != attackerNice || hi != attackerNice {
		t.Fatalf("child's %d threads at nice %d to %d, want all at %d", n, lo, hi, attackerNice)
	}
	if lo1, hi1, err := threadNice(0); err != nil || lo1 != lo0 || hi1 != hi0 {
		t.Fatalf("this process's threads moved from nice %d..%d to %d..%d (%v)", lo0, hi0, lo1, hi1, err)
	}
}
