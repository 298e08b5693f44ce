#!/usr/bin/env bash
# The local-tier benchmark (cache-runtime/benches/near.rs, BENCHMARKS.md §8) against a
# redis-server behind a realistic network: a network namespace of its own, joined to this
# one by a veth pair with `tc netem` delay on both ends (NETEM_DELAY_MS each way, default
# 0.5, so a round trip gains about 1 ms, as to a managed Redis in another zone). Loopback
# flatters a round trip; this does not. Everything is set up here and torn down on exit,
# failure included. Needs root (ip netns, tc: iproute2) and redis-server. Extra arguments
# go to `cargo bench`; API_CACHE_BENCH_QUICK=1 shortens the run.
set -euo pipefail
cd "$(dirname "$0")/.."

DELAY_MS="${NETEM_DELAY_MS:-0.5}"
# Names and addresses of this run only, so that two runs never share them.
ID="$$"
NS="apicache-netem-$ID"
HOST_IF="acnh$((ID % 100000))"
NS_IF="acnn$((ID % 100000))"
OCTET=$((ID % 200 + 20))
HOST_IP="10.231.$OCTET.1"
NS_IP="10.231.$OCTET.2"
PORT=16390
REDIS_PID=""

teardown() {
    if [[ -n "$REDIS_PID" ]]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    ip link del "$HOST_IF" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
}
trap teardown EXIT

ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$NS_IF"
ip link set "$NS_IF" netns "$NS"
ip addr add "$HOST_IP/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip netns exec "$NS" ip addr add "$NS_IP/30" dev "$NS_IF"
ip netns exec "$NS" ip link set "$NS_IF" up
ip netns exec "$NS" ip link set lo up
RELAY=""
if tc qdisc add dev "$HOST_IF" root netem delay "${DELAY_MS}ms" 2>/dev/null; then
    ip netns exec "$NS" tc qdisc add dev "$NS_IF" root netem delay "${DELAY_MS}ms"
else
    # Some kernels (a Firecracker VM's, for one) are built without sch_netem: the
    # bench's own delaying relay adds the delay instead, the veth pair still carries
    # every byte across a real interface into the namespace.
    echo "== tc netem is not available in this kernel: the benchmark's delaying relay adds ${DELAY_MS} ms each way instead"
    RELAY=$(awk "BEGIN { printf \"%d\", $DELAY_MS * 1000 }")
fi

ip netns exec "$NS" redis-server --bind "$NS_IP" --port "$PORT" --save '' --appendonly no \
    --protected-mode no --loglevel warning &
REDIS_PID=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/$NS_IP/$PORT") 2>/dev/null; then
        break
    fi
    sleep 0.1
done
echo "== redis-server at $NS_IP:$PORT in namespace $NS, ${DELAY_MS} ms each way"

if [[ -n "$RELAY" ]]; then
    export API_CACHE_BENCH_DELAY_US="$RELAY"
fi
API_CACHE_BENCH_REDIS_URL="redis://$NS_IP:$PORT/" cargo bench -p cache-runtime --bench near "$@"
