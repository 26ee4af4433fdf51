//go:build !linux

package main

import (
	"context"
	"errors"
	"log/slog"
)

// runClient needs Linux: the client sets up its TUN, routes and rules through netlink.
func runClient(context.Context, *clientConfig, *slog.Logger) error {
	return errors.New("the client runs on Linux only (it sets up its TUN, routes and rules through netlink)")
}
