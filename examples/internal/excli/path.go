package excli

// The -path flag: ADDR[,from=IP][,backup|,tier=N][,name=NAME], one a path to the serving side,
// and the dialer's target graph the paths make under the -policy flag.

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport"
	"github.com/rendr-go/rendr/transport/tcp"
)

// DialCarrier makes a path's dial function to address: tcp.Dialer, or a test's, which dials
// from a network namespace.
type DialCarrier func(address string, opts ...tcp.Option) transport.DialFunc

// PathGraph is a dialer's target graph: a path for each -path spec, all under one group of the
// policy (selector, race or bond). far names the side the paths reach ("server"), for the
// error when there is none.
func PathGraph(policy string, specs []string, far string, dial DialCarrier) (*rendr.Target, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("-path is required: the %s's address (give it once per path)", far)
	}
	var targets []*rendr.Target
	for i, s := range specs {
		t, err := ParsePath(s, fmt.Sprintf("path%d", i), dial)
		if err != nil {
			return nil, err
		}
		targets = append(targets, t)
	}
	switch policy {
	case "selector":
		return rendr.Selector("paths", targets...), nil
	case "race":
		return rendr.Race("paths", targets...), nil
	case "bond":
		return rendr.Bond("paths", targets...), nil
	}
	return nil, fmt.Errorf("-policy %q: selector, race or bond", policy)
}

// ParsePath reads one -path spec, ADDR[,from=IP][,backup|,tier=N][,name=NAME], into a TCP
// path named name unless the spec names it: from binds the carriers' local address (the
// uplink), backup and tier set its tier.
func ParsePath(spec, name string, dial DialCarrier) (*rendr.Target, error) {
	fields := strings.Split(spec, ",")
	addr := fields[0]
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("-path %q: %w", spec, err)
	}
	var topts []tcp.Option
	var popts []rendr.PathOption
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "from":
			if _, err := netip.ParseAddr(v); err != nil {
				return nil, fmt.Errorf("-path %q: from: %w", spec, err)
			}
			topts = append(topts, tcp.LocalAddr(v))
		case "backup":
			popts = append(popts, rendr.Backup())
		case "tier":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("-path %q: tier is a number, 0 for a primary path", spec)
			}
			popts = append(popts, rendr.Tier(n))
		case "name":
			if v == "" {
				return nil, fmt.Errorf("-path %q: an empty name", spec)
			}
			name = v
		default:
			return nil, fmt.Errorf("-path %q: unknown option %q (from=IP, backup, tier=N, name=NAME)", spec, k)
		}
	}
	return rendr.Path(name, dial(addr, topts...), popts...), nil
}
