//go:build !linux

package main

import (
	"errors"

	"github.com/rendr-go/rendr/tun"
)

// startGateway needs Linux: the gateway sets up its TUN, routes and masquerade through netlink
// and nftables.
func startGateway(*serverConfig) (*tun.Gateway, func() error, error) {
	return nil, nil, errors.New("the gateway (tun in the server's file) runs on Linux only")
}
