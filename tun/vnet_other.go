//go:build !linux

package tun

import wgtun "golang.zx2c4.com/wireguard/tun"

// openVnet returns nil: only Linux TUNs carry virtio-net headers.
func openVnet(wgtun.Device, bool) (*vnetDevice, error) { return nil, nil }
