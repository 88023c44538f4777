#!/usr/bin/env bash
# The kiosk (issue 10), in one run:
#  - N simulated AMT machines (default 1000) provisioned end to end by one
#    kiosk over loopback: hello → TLS-PSK → spec §6 steps 1-11 → TLS
#    verification, with the store on SQLite and on PostgreSQL (a throwaway
#    cluster); devices/s (target ≥ 50 with SQLite) and p50/p99 per machine.
#    The peer is the simulator's own provisioning exchange with a bare
#    client and no store (internal/amtsim BenchmarkProvision), one at a time.
#  - hellos/s parsed and recorded in the store (target ≥ 20,000), one TCP
#    connection per hello as AMT sends them (kiosk BenchmarkHellos), against
#    the peer: a plain Go accept-read-close loop that neither parses nor
#    records, a goroutine per connection reading to EOF (BenchmarkHellosPeer;
#    nothing of the kiosk's listener tricks — accept4 on the raw descriptor,
#    reading and handling on the accepting goroutine — is applied to it);
#    and the kiosk's own parse-fold-record pipeline without TCP
#    (BenchmarkHelloPipeline).
#    The senders are the same for kiosk and peer: a separate process (the
#    kiosk test binary re-executed as a hello sender, kiosk/main_test.go)
#    running HELLO_SENDERS OS threads (default 2; HELLO_PIN=1 pins thread i
#    to CPU i mod cores) that make plain blocking socket, connect, write,
#    close system calls (RawSyscall: no netpoller, goroutines or
#    allocations) — AMT devices are other machines, the senders should take
#    as little of the kiosk's cores as they can. The connections come from
#    HELLO_SOURCES loopback addresses (default 1024, 127.1.x.y), as from a
#    fleet of machines with an address each: from a single address the
#    kernel's search for a free source port among the TIME_WAIT sockets of
#    earlier hellos costs the sender twice the kiosk's whole work (a
#    first round, from one address, shows it; the kernel keeps at most
#    tcp_max_tw_buckets TIME_WAIT sockets and closes later connections
#    without one, so the count at each round's start is printed). Each
#    benchmark reports the
#    server process's CPU time per hello (rusage) and the sender's. The
#    kiosk and the peer alternate, HELLO_ROUNDS times (default 3); medians.
#    On loopback the receiving side's TCP work for the SYN, the data and the
#    FIN runs in the sender's system calls (softirq), so it is counted as
#    sender CPU; the server's own CPU is accept, read, close, and the FIN it
#    sends. "Capacity with remote senders" divides the cores by the
#    server's CPU per hello; "both on these cores" by server + sender CPU:
#    with the senders on the same cores, hellos/s is bounded by the sum, of
#    which the sender's part (the kernel's TCP work for both sides) is as
#    large as the server's, so hellos/s moves less than the server's CPU.
#    Hellos/s also swings with other load: compare kiosk and peer within a
#    round (the ratios printed), and the CPU per hello.
# Run it on a quiet machine: the senders share its cores with the kiosk.
# Usage: scripts/bench-kiosk.sh [devices]   (KIOSK_BENCH=hellos: the hello
# part only)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
hellos=${HELLOS:-100000}
senders=${HELLO_SENDERS:-2}
sources=${HELLO_SOURCES:-1024}
pin=false
[[ ${HELLO_PIN:-0} == 1 ]] && pin=true
rounds=${HELLO_ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/kiosk.test" ./kiosk
parts=${KIOSK_BENCH:-all}
prov= peer=
[[ $parts == hellos ]] || prov=$(cd kiosk && "$tmp/kiosk.test" -test.run='^$' -test.bench='^(BenchmarkProvisionSQLite|BenchmarkProvisionPostgres)$' -test.benchtime=1x -test.timeout=30m -kiosk.devices="$n")
[[ $parts == hellos ]] || peer=$(go test -run='^$' -bench='^BenchmarkProvision$' -benchtime=50x ./internal/amtsim)
# TIME_WAIT sockets on this machine: the kernel keeps at most
# net.ipv4.tcp_max_tw_buckets of them and closes later connections without
# one, which makes hellos cheaper once earlier rounds filled the table.
timewait() { ss -tan state time-wait | tail -n +2 | wc -l; }
# The same senders from one address first, kiosk only, while the TIME_WAIT
# table is as the machine left it: the rig's port search, for scale.
tw1=$(timewait)
one=$(cd kiosk && "$tmp/kiosk.test" -test.run='^$' -test.bench='^BenchmarkHellos$' -test.benchtime="${hellos}x" -kiosk.hello-senders="$senders" -kiosk.hello-pin="$pin" -kiosk.hello-sources=1)
hel=
loads=
tws=
ratios= # kiosk/peer hellos/s of each round
for ((i = 1; i <= rounds; i++)); do
	# Alternate which goes first.
	order='BenchmarkHellos BenchmarkHellosPeer'
	((i % 2 == 0)) && order='BenchmarkHellosPeer BenchmarkHellos'
	round=
	tws+="$(timewait) "
	for b in $order BenchmarkHelloPipeline; do
		round+=$(cd kiosk && "$tmp/kiosk.test" -test.run='^$' -test.bench="^$b\$" -test.benchtime="${hellos}x" -kiosk.hello-senders="$senders" -kiosk.hello-pin="$pin" -kiosk.hello-sources="$sources")$'\n'
	done
	hel+=$round
	ratios+="$(echo "$round" | awk '$1 ~ /^BenchmarkHellos(-[0-9]+)?$/ { for (i = 1; i < NF; i++) if ($(i+1) == "hellos/s") k = $i }
		$1 ~ /^BenchmarkHellosPeer(-[0-9]+)?$/ { for (i = 1; i < NF; i++) if ($(i+1) == "hellos/s") p = $i }
		END { printf "%.2f", k / p }') "
	loads+="$(cut -d' ' -f1 /proc/loadavg) "
done
printf '%s\n%s\n%s\n' "$prov" "$peer" "$hel" | grep -E '^Benchmark'
printf 'from one source address:\n%s\n' "$one" | grep -E '^(Benchmark|from)'
metric() { awk -v name="$1" -v unit="$2" '$1 ~ "^"name"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == unit) v[++k] = $i }
	END { if (k == 0) exit 1; for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }; print v[int((k + 1) / 2)] }'; }
. scripts/bench-lib.sh
if [[ $parts != hellos ]]; then
	s=$(echo "$prov" | metric BenchmarkProvisionSQLite devices/s)
	s50=$(echo "$prov" | metric BenchmarkProvisionSQLite p50-ms)
	s99=$(echo "$prov" | metric BenchmarkProvisionSQLite p99-ms)
	p=$(echo "$prov" | metric BenchmarkProvisionPostgres devices/s)
	p50=$(echo "$prov" | metric BenchmarkProvisionPostgres p50-ms)
	p99=$(echo "$prov" | metric BenchmarkProvisionPostgres p99-ms)
	q=$(echo "$peer" | metric BenchmarkProvision provisions/s)
	awk -v n="$n" -v s="$s" -v s50="$s50" -v s99="$s99" -v p="$p" -v p50="$p50" -v p99="$p99" -v q="$q" 'BEGIN {
	printf "%d machines, SQLite:     %.1f devices/s (total %.1f s), p50 %d ms, p99 %d ms (target ≥ 50/s)\n", n, s, n / s, s50, s99
	printf "%d machines, PostgreSQL: %.1f devices/s (total %.1f s), p50 %d ms, p99 %d ms\n", n, p, n / p, p50, p99
	printf "peer, one bare exchange at a time (no store, no hello, no verify): %.1f machines/s; kiosk SQLite/peer = %.2fx\n", q, s / q
}'
	figure "$n machines provisioned, SQLite" "$s" "bare simulator exchange, one at a time" "$q" devices/s higher "≥ 50/s"
	figure "$n machines provisioned, PostgreSQL" "$p" "bare simulator exchange, one at a time" "$q" devices/s higher
fi
h=$(echo "$hel" | metric BenchmarkHellos hellos/s)
hc=$(echo "$hel" | metric BenchmarkHellos cpu-us/hello)
hsc=$(echo "$hel" | metric BenchmarkHellos sender-cpu-us/hello)
hp=$(echo "$hel" | metric BenchmarkHellosPeer hellos/s)
hpc=$(echo "$hel" | metric BenchmarkHellosPeer cpu-us/hello)
hpsc=$(echo "$hel" | metric BenchmarkHellosPeer sender-cpu-us/hello)
pl=$(echo "$hel" | metric BenchmarkHelloPipeline hellos/s)
o=$(echo "$one" | metric BenchmarkHellos hellos/s)
oc=$(echo "$one" | metric BenchmarkHellos cpu-us/hello)
osc=$(echo "$one" | metric BenchmarkHellos sender-cpu-us/hello)
cores=$(nproc)
awk -v loads="$loads" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" -v h="$h" -v hc="$hc" -v hsc="$hsc" -v hp="$hp" -v hpc="$hpc" -v hpsc="$hpsc" -v pl="$pl" -v cores="$cores" -v senders="$senders" -v pin="$pin" -v rounds="$rounds" -v ratios="$ratios" -v sources="$sources" -v o="$o" -v oc="$oc" -v osc="$osc" -v tw1="$tw1" -v tws="$tws" -v twmax="$(sysctl -n net.ipv4.tcp_max_tw_buckets)" 'BEGIN {
	printf "hellos over TCP (%d sender threads in another process, pinned: %s, from %d source addresses; medians of %d alternating rounds):\n", senders, pin, sources, rounds
	printf "  parsed and recorded: %.0f/s; plain accept loop: %.0f/s; kiosk/peer = %.2fx (target ≥ 20,000/s); kiosk/peer in each round: %s\n", h, hp, h / hp, ratios
	printf "  server CPU per hello: kiosk %.1f µs, plain loop %.1f µs, kiosk/peer = %.2fx; sender CPU per hello: %.1f µs (kiosk run), %.1f µs (peer run)\n", hc, hpc, hc / hpc, hsc, hpsc
	printf "  capacity on %d cores, remote senders: kiosk %.0f hellos/s, plain loop %.0f; both on these cores: kiosk %.0f, plain loop %.0f\n", cores, cores * 1e6 / hc, cores * 1e6 / hpc, cores * 1e6 / (hc + hsc), cores * 1e6 / (hpc + hpsc)
	printf "  from one source address (kiosk, run first, %d TIME_WAIT sockets at its start): %.0f/s; kiosk CPU %.1f µs, sender CPU %.1f µs per hello (the kernel searching TIME_WAIT sockets for a free source port)\n", tw1, o, oc, osc
	printf "  TIME_WAIT sockets at the start of each round: %s(the kernel keeps at most %d)\n", tws, twmax
	printf "parse + fold + record without TCP: %.0f hellos/s\n", pl
	printf "load average after each hello round: %s; at the end: %s\n", loads, load
}'
figure "hellos over TCP, parsed and recorded" "$h" "plain accept loop" "$hp" hellos/s higher "≥ 20,000/s"
figure "kiosk CPU per hello, senders in another process" "$hc" "plain accept loop" "$hpc" "µs CPU/hello" lower
