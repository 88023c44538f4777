#!/bin/sh
# bench-store.sh — the kiosk/store figures of issue "kiosk/store", each next
# to its target, on SQLite and on a throwaway PostgreSQL cluster (started by
# kiosk/store/storetest; needs the postgresql package, see install-deps.sh).
#
#   generate and store 100,000 encrypted entries   ≤ 3 s
#   allocate a 1,000-record stick                  ≤ 200 ms
#   pool status on a 1,000,000-entry pool          ≤ 1 s
#
# There is no peer tool to compare with; the target stands in its place.
# The 1,000,000-entry pool takes minutes to build, which is why it lives
# here and not in "go test". Set QUICK=1 to skip it.
#
# Usage: scripts/bench-store.sh
set -eu
cd "$(dirname "$0")/.."

benches='Generate100k|Allocate1000'
[ "${QUICK:-}" = 1 ] || benches="$benches|Status1M"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "kiosk/store benchmarks ($(go env GOOS)/$(go env GOARCH), $(nproc 2>/dev/null || echo '?') CPUs, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'))"
go test -run '^$' -bench "^Benchmark($benches)\$" -benchtime 5x -timeout 60m ./kiosk/store/ | tee "$out" | grep -E '^(Benchmark|ok|FAIL)' >&2

# Lines look like (the figure is the metric whose unit starts with "ms/"):
# BenchmarkGenerate100k/sqlite-2   5   2872297252 ns/op   1874 cpu-ms/100k   2872 ms/100k
awk '
function verdict(v, t) { return v <= t ? "ok" : "OVER TARGET" }
/^Benchmark/ {
	split($1, p, "/"); name = p[1]; sub(/^Benchmark/, "", name)
	eng = p[2]; sub(/-[0-9]+$/, "", eng)
	v = ""
	for (i = 4; i < NF; i++) if ($(i+1) ~ /^ms\//) v = $i
	if (name == "Generate100k") { t = 3000; what = "generate+store 100,000 encrypted entries" }
	else if (name == "Allocate1000") { t = 200; what = "allocate a 1,000-record stick" }
	else if (name == "Status1M") { t = 1000; what = "pool status, 1,000,000 entries" }
	else next
	printf "%-42s %-8s %10.1f ms   target <= %5d ms   %s\n", what, eng, v, t, verdict(v, t)
	printf "@figure {\"name\":\"%s (%s)\",\"ours\":%.1f,\"peer\":\"the issue'"'"'s target\",\"peer_value\":%d,\"unit\":\"ms\",\"better\":\"lower\",\"target\":\"≤ %d ms\"}\n", what, eng, v, t, t
	if (v > t) over = 1
}
END { exit over }
' "$out"
