#!/usr/bin/env bash
# A seed and a leecher on two hosts (network namespaces) joined by a router
# whose TUN device holds every packet for a fixed delay (a few lines of
# Python: this kernel has no netem), so the link has a real round trip.
# For each delay it runs `p2pft swarm` on both hosts with the adaptive
# request depth (the default), a fixed depth of 4 (`P2pftPipelineDepth 4`)
# and spec-strict peers (one request at a time), and prints the leecher's
# rate. Needs root, `ip` and python3; removes its namespaces and files.
#
#   benches/latency.sh [one-way delays in ms, default "1 10 25"] [file MiB, default 64]
set -euo pipefail
delays=${1:-"1 10 25"}
mib=${2:-64}
p2pft=${P2PFT:-$(cd "$(dirname "$0")/.." && pwd)/target/release/p2pft}
[ -x "$p2pft" ] || { echo "build first: cargo build --release" >&2; exit 2; }
tag=$$
work=$(mktemp -d /tmp/p2pft-latency.XXXXXX)
relay_pid=
cleanup() {
    [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
    for n in a b r; do ip netns del "lat$n$tag" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

cat > "$work/delay.py" <<'EOF'
import os, fcntl, struct, time, select, sys, collections
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454ca, 0x0001, 0x1000
fd = os.open('/dev/net/tun', os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', sys.argv[1].encode(), IFF_TUN | IFF_NO_PI))
delay = float(sys.argv[2]) / 1000.0
print("ready", flush=True)
q = collections.deque()
while True:
    now = time.time()
    while q and q[0][0] <= now:
        os.write(fd, q.popleft()[1])
    r, _, _ = select.select([fd], [], [], max(0.0, q[0][0] - now) if q else 1.0)
    if r:
        q.append((time.time() + delay, os.read(fd, 65536)))
EOF

# Hosts a (10.9.1.1) and b (10.9.2.1); router r sends all they send through its TUN.
A=lata$tag B=latb$tag R=latr$tag
for n in $A $B $R; do ip netns add $n; ip -n $n link set lo up; done
for h in a b; do
    ip link add v$h$tag type veth peer name r$h$tag
    ip link set v$h$tag netns lat$h$tag
    ip link set r$h$tag netns $R
done
ip -n $A addr add 10.9.1.1/24 dev va$tag; ip -n $A link set va$tag mtu 65000 up
ip -n $A route add default via 10.9.1.254
ip -n $B addr add 10.9.2.1/24 dev vb$tag; ip -n $B link set vb$tag mtu 65000 up
ip -n $B route add default via 10.9.2.254
ip -n $R addr add 10.9.1.254/24 dev ra$tag; ip -n $R link set ra$tag mtu 65000 up
ip -n $R addr add 10.9.2.254/24 dev rb$tag; ip -n $R link set rb$tag mtu 65000 up
ip netns exec $R sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0

start_relay() {
    [ -n "$relay_pid" ] && { kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; }
    ip netns exec $R python3 "$work/delay.py" tun$tag "$1" > "$work/relay.out" 2>&1 &
    relay_pid=$!
    for _ in $(seq 50); do grep -q ready "$work/relay.out" && break; sleep 0.1; done
    ip -n $R link set tun$tag mtu 65000 up
    ip netns exec $R sysctl -qw net.ipv4.conf.tun$tag.rp_filter=0
    ip -n $R route replace default dev tun$tag table 100
    ip -n $R rule del iif ra$tag lookup 100 2>/dev/null || true
    ip -n $R rule del iif rb$tag lookup 100 2>/dev/null || true
    ip -n $R rule add iif ra$tag lookup 100
    ip -n $R rule add iif rb$tag lookup 100
}

size=$((mib << 20))
head -c $size /dev/urandom > "$work/seed.dat"
run() { # extra Common.cfg line -> the leecher's MiB/s
    for h in A B; do
        d=$work/h$h; rm -rf "$d"; mkdir -p "$d"
        printf "NumberOfPreferredNeighbors 1\nUnchokingInterval 1\nOptimisticUnchokingInterval 2\nFileName f.dat\nFileSize %d\nPieceSize 262144\n%s\n" $size "$1" > "$d/Common.cfg"
        printf "1001 10.9.1.1 6001 1\n1002 10.9.2.1 6002 0\n" > "$d/PeerInfo.cfg"
    done
    mkdir -p "$work/hA/peer_1001"; cp "$work/seed.dat" "$work/hA/peer_1001/f.dat"
    (cd "$work/hA" && "$p2pft" meta peer_1001/f.dat > /dev/null)
    cp "$work/hA/f.dat.meta.json" "$work/hB/"
    ip netns exec $A "$p2pft" swarm --dir "$work/hA" --json > "$work/outA" 2> /dev/null &
    ip netns exec $B "$p2pft" swarm --dir "$work/hB" --json > "$work/outB" 2>> "${LATENCY_ERR:-/dev/null}"
    wait $!
    python3 - "$work/outB" $size <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); p = [p for p in r["peers"] if p["local"]][0]
secs = p["complete_after_secs"]
print("%7.1f MiB/s (%s)" % (int(sys.argv[2]) / 2**20 / secs, p["file_check"]) if r["ok"] else "FAILED")
EOF
}

printf "%-14s %-26s %-26s %s\n" "round trip" "adaptive depth (default)" "depth 4" "spec-strict"
for d in $delays; do
    start_relay "$d"
    printf "%-14s %-26s %-26s %s\n" "$((2 * d)) ms + relay" "$(run "")" "$(run "P2pftPipelineDepth 4")" "$(run "P2pftStrict 1")"
done
