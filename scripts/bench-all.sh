#!/usr/bin/env bash
# `make bench`: runs every benchmark script (scripts/bench-*.sh), each of
# which measures ours and a peer in the same run, keeps each output under
# bench/raw/, and writes bench/report.md with PNG charts
# (tools/benchreport). A script that fails is reported as failed; the
# others still run. BENCH_ONLY="setupbin tlspsk" limits the run.
set -uo pipefail
cd "$(dirname "$0")/.."
raw=bench/raw
mkdir -p "$raw"
# Without BENCH_ONLY every output is made anew; with it, the other
# scripts' outputs from an earlier run stay and go into the report too.
[ -z "${BENCH_ONLY:-}" ] && rm -f "$raw"/*.txt "$raw"/*.status
status=0
for s in scripts/bench-*.sh; do
	name=$(basename "$s" .sh)
	[ "$name" = bench-lib ] || [ "$name" = bench-all ] && continue
	if [ -n "${BENCH_ONLY:-}" ] && ! [[ " $BENCH_ONLY " == *" ${name#bench-} "* ]]; then
		continue
	fi
	echo "== $s ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))"
	start=$(date +%s)
	bash "$s" >"$raw/$name.txt" 2>&1
	rc=$?
	if [ $rc = 0 ]; then echo ok >"$raw/$name.status"; else echo "exit $rc" >"$raw/$name.status"; status=1; fi
	grep '^@figure' "$raw/$name.txt" | sed 's/^/   /'
	echo "   ($(( $(date +%s) - start )) s, $(cat "$raw/$name.status"))"
done
go run ./tools/benchreport -raw "$raw" -o bench || status=1
echo "bench: wrote bench/report.md"
exit $status
