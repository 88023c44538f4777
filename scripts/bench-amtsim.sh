#!/usr/bin/env bash
# The AMT network simulator, in one run:
#  - one Get AMT_GeneralSettings over the 16992 Digest path, made by our
#    wsman client and by MeshCentral's WS-Man stack (node, the peer), against
#    the same simulated machine; prints both and the ratio peer/ours;
#  - the whole spec §6 provisioning exchange over TLS-PSK against a fresh
#    machine (key generation excluded), per second;
#  - memory per idle machine among 2,000 (issue 9 target: at most 64 KiB).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-300}
out=$(go test -run='^$' -bench='^(BenchmarkSimGet|BenchmarkSimGetPeer)$' -benchtime="${n}x" -count=3 ./internal/amtsim)
prov=$(go test -run='^$' -bench='^BenchmarkProvision$' -benchtime=50x -count=1 ./internal/amtsim)
idle=$(go test -run='^$' -bench='^BenchmarkIdleDevice$' -benchtime=1x -count=1 ./internal/amtsim)
printf '%s\n%s\n%s\n' "$out" "$prov" "$idle" | grep -E '^Benchmark'
echo "$out" | awk '
	/^BenchmarkSimGet-|^BenchmarkSimGet / { ours[++a] = $3 }
	/^BenchmarkSimGetPeer/ { peer[++p] = $3 }
	function median(v, n,   i, j, t) {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
		return v[int((n + 1) / 2)]
	}
	END {
		if (a == 0 || p == 0) { print "bench-amtsim: missing Get results"; exit 1 }
		o = median(ours, a); q = median(peer, p)
		printf "median Get against the simulator: provstick %.0f µs, MeshCentral %.0f µs, MeshCentral/provstick = %.2fx\n", o / 1000, q / 1000, q / o
		printf "@figure {\"name\":\"Get against the simulator\",\"ours\":%.1f,\"peer\":\"MeshCentral amt-wsman\",\"peer_value\":%.1f,\"unit\":\"µs\",\"better\":\"lower\"}\n", o / 1000, q / 1000
	}'
echo "$prov" | awk '/^BenchmarkProvision/ { for (i = 1; i < NF; i++) if ($(i+1) == "provisions/s") printf "full provisioning exchange (TLS-PSK, one client): %.1f machines/s\n", $i }'
echo "$idle" | awk '/^BenchmarkIdleDevice/ { for (i = 1; i < NF; i++) if ($(i+1) == "B/device") printf "idle machine: %.1f KiB (target 64 KiB, %.2f of it)\n", $i / 1024, $i / 65536 }'
