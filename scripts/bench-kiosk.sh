#!/usr/bin/env bash
# The kiosk (issue 10), in one run:
#  - N simulated AMT machines (default 1000) provisioned end to end by one
#    kiosk over loopback: hello → TLS-PSK → spec §6 steps 1-11 → TLS
#    verification, with the store on SQLite and on PostgreSQL (a throwaway
#    cluster); devices/s (target ≥ 50 with SQLite) and p50/p99 per machine.
#    The peer is the simulator's own provisioning exchange with a bare
#    client and no store (internal/amtsim BenchmarkProvision), one at a time.
#  - hellos/s parsed and recorded in the store (target ≥ 20,000): over TCP,
#    one connection per hello as AMT sends them, against the peer, a plain
#    accept-read-close loop that neither parses nor records; and the kiosk's
#    own parse-fold-record pipeline without TCP.
#  - the same with the clients in a separate process: the kiosk's CPU time
#    per hello against the plain loop's (kernel TCP setup dominates both), and
#    what that means for hellos/s when the senders are other machines.
#    HELLO_SENDERS sets the client goroutines (default 8).
# Run it on a quiet machine: the clients share its cores with the kiosk.
# Usage: scripts/bench-kiosk.sh [devices]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
hellos=${HELLOS:-100000}
senders=${HELLO_SENDERS:-8}
prov=$(go test -run='^$' -bench='^(BenchmarkProvisionSQLite|BenchmarkProvisionPostgres)$' -benchtime=1x -timeout=30m ./kiosk -args -kiosk.devices="$n")
peer=$(go test -run='^$' -bench='^BenchmarkProvision$' -benchtime=50x ./internal/amtsim)
hel=$(go test -run='^$' -bench='^(BenchmarkHellos|BenchmarkHellosPeer|BenchmarkHelloPipeline|BenchmarkHellosServer|BenchmarkHellosServerPeer)$' -benchtime="${hellos}x" -count=3 ./kiosk -args -kiosk.hello-senders="$senders")
printf '%s\n%s\n%s\n' "$prov" "$peer" "$hel" | grep -E '^Benchmark'
metric() { awk -v name="$1" -v unit="$2" '$1 ~ "^"name"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == unit) v[++k] = $i }
	END { if (k == 0) exit 1; for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }; print v[int((k + 1) / 2)] }'; }
s=$(echo "$prov" | metric BenchmarkProvisionSQLite devices/s)
s50=$(echo "$prov" | metric BenchmarkProvisionSQLite p50-ms)
s99=$(echo "$prov" | metric BenchmarkProvisionSQLite p99-ms)
p=$(echo "$prov" | metric BenchmarkProvisionPostgres devices/s)
p50=$(echo "$prov" | metric BenchmarkProvisionPostgres p50-ms)
p99=$(echo "$prov" | metric BenchmarkProvisionPostgres p99-ms)
q=$(echo "$peer" | metric BenchmarkProvision provisions/s)
h=$(echo "$hel" | metric BenchmarkHellos hellos/s)
hp=$(echo "$hel" | metric BenchmarkHellosPeer hellos/s)
pl=$(echo "$hel" | metric BenchmarkHelloPipeline hellos/s)
hs=$(echo "$hel" | metric BenchmarkHellosServer hellos/s)
hsc=$(echo "$hel" | metric BenchmarkHellosServer cpu-us/hello)
hps=$(echo "$hel" | metric BenchmarkHellosServerPeer hellos/s)
hpc=$(echo "$hel" | metric BenchmarkHellosServerPeer cpu-us/hello)
cores=$(nproc)
load=$(cut -d' ' -f1-3 /proc/loadavg)
awk -v load="$load" -v n="$n" -v s="$s" -v s50="$s50" -v s99="$s99" -v p="$p" -v p50="$p50" -v p99="$p99" -v q="$q" -v h="$h" -v hp="$hp" -v pl="$pl" -v hs="$hs" -v hsc="$hsc" -v hps="$hps" -v hpc="$hpc" -v cores="$cores" 'BEGIN {
	printf "%d machines, SQLite:     %.1f devices/s (total %.1f s), p50 %d ms, p99 %d ms (target ≥ 50/s)\n", n, s, n / s, s50, s99
	printf "%d machines, PostgreSQL: %.1f devices/s (total %.1f s), p50 %d ms, p99 %d ms\n", n, p, n / p, p50, p99
	printf "peer, one bare exchange at a time (no store, no hello, no verify): %.1f machines/s; kiosk SQLite/peer = %.2fx\n", q, s / q
	printf "hellos over TCP, parsed and recorded: %.0f/s; plain accept loop: %.0f/s; kiosk/peer = %.2fx (target ≥ 20,000/s)\n", h, hp, h / hp
	printf "parse + fold + record without TCP: %.0f hellos/s\n", pl
	printf "clients in another process: kiosk %.0f hellos/s, %.1f µs CPU/hello; plain loop %.0f hellos/s, %.1f µs CPU/hello; kiosk/peer CPU = %.2fx\n", hs, hsc, hps, hpc, hsc / hpc
	printf "kiosk capacity with remote senders on %d cores: %.0f hellos/s (plain loop: %.0f)\n", cores, cores * 1e6 / hsc, cores * 1e6 / hpc
	printf "load average at the end: %s\n", load
}'
. scripts/bench-lib.sh
figure "$n machines provisioned, SQLite" "$s" "bare simulator exchange, one at a time" "$q" devices/s higher "≥ 50/s"
figure "$n machines provisioned, PostgreSQL" "$p" "bare simulator exchange, one at a time" "$q" devices/s higher
figure "hellos over TCP, parsed and recorded" "$h" "plain accept loop" "$hp" hellos/s higher "≥ 20,000/s"
figure "kiosk CPU per hello, senders in another process" "$hsc" "plain accept loop" "$hpc" "µs CPU/hello" lower
