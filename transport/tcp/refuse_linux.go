package tcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// netOff is SKF_NET_OFF: a classic BPF load at netOff+k reads byte k of the network header,
// whatever the socket's own layer (a TCP socket's filter sees the TCP segment otherwise).
const netOff = 0xfff00000 // -0x100000 as uint32

// refuseProgram is a socket filter that drops packets from the given IPv4 addresses and
// IPv6 /64s and lets the rest through. Every jump stays within a conditional jump's reach
// (255 instructions): the longest, over the IPv6 entries, is 4 per entry, and maxRefused
// keeps them to 32.
func refuseProgram(v4, v6 []netip.Prefix) ([]bpf.Instruction, error) {
	if len(v4) > maxRefused || len(v6) > maxRefused {
		return nil, unix.EINVAL
	}
	drop, allow := bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: 0xffffffff}
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: netOff, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
		// 4: fall through to the IPv4 checks; else jump over them (and their two returns).
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipTrue: 0, SkipFalse: uint8(len(v4) + 3)},
		bpf.LoadAbsolute{Off: netOff + 12, Size: 4},
	}
	for i, p := range v4 {
		a := p.Addr().As4()
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(a[:]),
			SkipTrue: uint8(len(v4) - i)}) // to the drop after the allow
	}
	prog = append(prog, allow, drop)
	// A holds the address now: load the version again for the IPv6 checks.
	prog = append(prog,
		bpf.LoadAbsolute{Off: netOff, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 0, SkipFalse: uint8(4 * len(v6))},
	)
	for i, p := range v6 {
		a := p.Addr().As16()
		left := 4 * (len(v6) - i - 1) // instructions of the entries after this one
		prog = append(prog,
			bpf.LoadAbsolute{Off: netOff + 8, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(a[0:4]), SkipFalse: 2},
			bpf.LoadAbsolute{Off: netOff + 12, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(a[4:8]), SkipTrue: uint8(left + 1)},
		)
	}
	prog = append(prog, allow, drop)
	return prog, nil
}

// setRefuseFilter puts the filter on the listening socket, or takes it off when both lists
// are empty, and reports whether one is on.
func setRefuseFilter(l net.Listener, v4, v6 []netip.Prefix) bool {
	tl, ok := l.(*net.TCPListener)
	if !ok {
		return false
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return false
	}
	if len(v4) == 0 && len(v6) == 0 {
		detachFilter(rc)
		return false
	}
	prog, err := refuseProgram(v4, v6)
	if err != nil {
		return false
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return false
	}
	f := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]})
	})
	return err == nil && serr == nil
}

// detachFilter takes a socket filter off.
func detachFilter(rc syscall.RawConn) {
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	})
}
