#!/usr/bin/env bash
# A two-namespace walk through tunvpn: a client namespace with two uplinks (two veth pairs) to
# a server namespace, which holds a "far network" (10.99.0.1) only the tunnel reaches. It
# builds tunvpn, makes keys and both configuration files, starts both sides, downloads a file
# through the tunnel while it cuts the uplink in use, pings through it, shows `tunvpn status`,
# and removes everything it made. Run it as root from the repository's root:
#
#   sudo bash examples/tunvpn/netns-demo.sh
#
# It touches nothing outside the two namespaces it creates (tvdemo-client, tvdemo-server).
set -euo pipefail

c=tvdemo-client
s=tvdemo-server
work=$(mktemp -d)

cleanup() {
	# Everything this script started runs in one of its namespaces: stop it all there.
	for ns in "$c" "$s"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
	done
	wait 2>/dev/null || true
	ip netns del "$c" 2>/dev/null || true
	ip netns del "$s" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "== building tunvpn"
go build -o "$work/tunvpn" ./examples/tunvpn

echo "== two namespaces, two uplinks"
ip netns add "$c"
ip netns add "$s"
for i in 1 2; do
	ip link add "up$i" netns "$c" type veth peer name "srv$i" netns "$s"
	ip -n "$c" addr add "10.77.$i.1/24" dev "up$i"
	ip -n "$s" addr add "10.77.$i.2/24" dev "srv$i"
	ip -n "$c" link set "up$i" up
	ip -n "$s" link set "srv$i" up
done
ip -n "$c" link set lo up
ip -n "$s" link set lo up
ip -n "$s" addr add 10.99.0.1/32 dev lo # the far network, behind the server

echo "== keys and configuration"
"$work/tunvpn" genkey >"$work/server.key"
"$work/tunvpn" genkey >"$work/client.key"
cat >"$work/server.toml" <<EOF
private_key = "$(cat "$work/server.key")"
peers = ["$("$work/tunvpn" pubkey <"$work/client.key")"]
listen = ["10.77.1.2:7000", "10.77.2.2:7000"]
allow = ["10.99.0.0/16"]
status_socket = "$work/server.sock"
tun = "tvdemo-gw"
tun_addresses = ["10.98.255.1/32"]
client_networks = ["10.98.0.0/16"]
EOF
cat >"$work/client.toml" <<EOF
private_key = "$(cat "$work/client.key")"
server_key = "$("$work/tunvpn" pubkey <"$work/server.key")"
policy = "selector"
addresses = ["10.98.0.2/32"]
routes = ["10.99.0.0/16"]
status_socket = "$work/client.sock"

[[uplink]]
name = "wifi"
server = "10.77.1.2:7000"
source = "10.77.1.1"

[[uplink]]
name = "lte"
server = "10.77.2.2:7000"
source = "10.77.2.1"
tier = 1
EOF
cat "$work/client.toml" | grep -v private_key

echo "== a web server in the far network, serving 64 MiB"
head -c 67108864 /dev/urandom >"$work/64m"
ip netns exec "$s" python3 -m http.server --bind 10.99.0.1 --directory "$work" 8080 >/dev/null 2>&1 &

echo "== starting both sides"
ip netns exec "$s" "$work/tunvpn" server -c "$work/server.toml" &
sleep 0.5
ip netns exec "$c" "$work/tunvpn" client -c "$work/client.toml" &
for _ in $(seq 50); do
	ip netns exec "$c" "$work/tunvpn" status -s "$work/client.sock" >/dev/null 2>&1 && break
	sleep 0.2
done

echo "== downloading through the tunnel; wifi is cut (blackholed) after 2 seconds"
ip netns exec "$c" curl -sS --limit-rate 20M -o "$work/got" http://10.99.0.1:8080/64m &
curl_pid=$!
sleep 2
ip netns exec "$c" nft -f - <<EOF
table inet tvdemo {
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "up1" drop
	}
}
EOF
wait "$curl_pid"
if cmp -s "$work/64m" "$work/got"; then
	echo "== the download is whole: $(sha256sum <"$work/got" | cut -c1-16)..., same as the server's file"
else
	echo "== the download differs from the server's file" >&2
	exit 1
fi

echo "== ping through the tunnel (as whole packets, to the server's gateway)"
ip netns exec "$c" ping -c 3 -i 0.2 10.99.0.1

echo "== tunvpn status on the client"
ip netns exec "$c" "$work/tunvpn" status -s "$work/client.sock"
