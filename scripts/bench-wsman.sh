#!/usr/bin/env bash
# WS-Man round trips, in one run: our client and MeshCentral's WS-Man stack
# (node, the peer) each make the same digest-authenticated Get of
# AMT_GeneralSettings against the same dispatcher on loopback. Prints both
# per-call times and the ratio peer/ours (how many times faster we are).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
out=$(go test -run='^$' -bench='^(BenchmarkGet|BenchmarkGetPeer)$' -benchtime="${n}x" -count=3 ./internal/wsman)
echo "$out" | grep -E '^Benchmark'
echo "$out" | awk '
	/^BenchmarkGet-|^BenchmarkGet / { ours[++a] = $3 }
	/^BenchmarkGetPeer/ { peer[++p] = $3 }
	function median(v, n,   i, j, t) {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
		return v[int((n + 1) / 2)]
	}
	END {
		if (a == 0 || p == 0) { print "bench-wsman: missing results"; exit 1 }
		o = median(ours, a); q = median(peer, p)
		printf "median per Get: provstick %.0f µs, MeshCentral %.0f µs, MeshCentral/provstick = %.2fx\n", o / 1000, q / 1000, q / o
		printf "@figure {\"name\":\"WS-Man Get, client side\",\"ours\":%.1f,\"peer\":\"MeshCentral amt-wsman\",\"peer_value\":%.1f,\"unit\":\"µs\",\"better\":\"lower\"}\n", o / 1000, q / 1000
	}'
