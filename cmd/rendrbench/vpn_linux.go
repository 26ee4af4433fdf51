//go:build linux

package main

import (
	"fmt"
	"os"
	"time"
)

// userHZ is the unit of /proc's CPU times: USER_HZ, 100 on every architecture Go runs Linux on.
const userHZ = 100

// procCPU is the user and system CPU time process pid has used so far, all its threads.
func procCPU(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	u, s, err := parseProcStat(string(b))
	if err != nil {
		return 0, 0, err
	}
	return time.Duration(u) * time.Second / userHZ, time.Duration(s) * time.Second / userHZ, nil
}
