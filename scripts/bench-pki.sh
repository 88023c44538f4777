#!/usr/bin/env bash
# bench-pki.sh — devices/s of the PKI handshake (issue 12) against the PSK
# handshake, measured in the same go test process on 127.0.0.1 only.
#
#   scripts/bench-pki.sh                  # BENCHTIME=2s COUNT=5
#   BENCHTIME=5s COUNT=7 scripts/bench-pki.sh
#
# One operation = one device as the kiosk meets it: a new TCP connection,
# the TLS handshake, and the first Digest-authenticated WS-Man Get against
# the simulated machine (internal/amtsim):
#   PKI: TLS 1.2 with the site provisioning chain as client certificate,
#        checked by the machine (root hash, validity, OID, suffix);
#   PSK: TLS-PSK (internal/tlspsk) with the PID/PPS.
# Also printed: the whole PKI workflow per machine (AdminSetup with signed
# nonces, key, certificate, TLS, commit, verification).
#
# Then the whole loop through the kiosk (package kiosk), PKI against PSK in
# one go test process: DEVICES simulated machines (default 200) say hello
# to kiosk.New with a SQLite store, and devices/s is counted from the
# moment every machine listens to the last one provisioned (PKI: version-3
# hello, site chain, AdminSetup, TLS steps, admin password sealed in the
# store; PSK: BenchmarkProvisionSQLite, the same settings), KCOUNT runs
# each (default 3).
#
# Figures are medians of the runs (the machine may be shared); the load
# average is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

BENCHTIME=${BENCHTIME:-2s}
COUNT=${COUNT:-5}
DEVICES=${DEVICES:-200}
KCOUNT=${KCOUNT:-3}
command -v go >/dev/null || { echo "bench-pki: go not found" >&2; exit 1; }

out=$(go test -run '^$' -bench '^Benchmark(PKIHandshake|PSKHandshake|PKIProvision)$' -benchtime "$BENCHTIME" -count "$COUNT" ./kiosk/provision/)
echo "$out" | grep -E '^Benchmark' || true
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
median() { # benchmark name → median devices/s
	echo "$out" | awk -v n="$1" '$1 ~ "^"n"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == "devices/s") print $i }' |
		sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) { print "nan"; exit } print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'
}
pki=$(median BenchmarkPKIHandshake)
psk=$(median BenchmarkPSKHandshake)
full=$(median BenchmarkPKIProvision)
printf 'PKI handshake:        %8.1f devices/s\n' "$pki"
printf 'PSK handshake (peer): %8.1f devices/s\n' "$psk"
awk -v a="$pki" -v b="$psk" 'BEGIN { printf "ratio PKI/PSK:        %8.2f\n", a / b }'
printf 'PKI full workflow:    %8.1f devices/s (one machine after another)\n' "$full"
figure "PKI handshake (provisioning chain, first WS-Man Get)" "$pki" "PSK handshake, same run" "$psk" "devices/s" higher

kout=$(go test ./kiosk/ -run '^$' -bench '^BenchmarkProvision(PKI|SQLite)$' -benchtime 1x -count "$KCOUNT" -kiosk.devices="$DEVICES" 2>/dev/null)
echo "$kout" | grep -E '^Benchmark' || true
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime)"
out=$kout
kpki=$(median BenchmarkProvisionPKI)
kpsk=$(median BenchmarkProvisionSQLite)
printf 'kiosk, PKI:           %8.1f devices/s (%s machines)\n' "$kpki" "$DEVICES"
printf 'kiosk, PSK (peer):    %8.1f devices/s\n' "$kpsk"
awk -v a="$kpki" -v b="$kpsk" 'BEGIN { printf "ratio PKI/PSK:        %8.2f\n", a / b }'
figure "kiosk provisioning, PKI to admin control mode ($DEVICES machines)" "$kpki" "kiosk provisioning over TLS-PSK, same run" "$kpsk" "devices/s" higher "≥ 0.5× PSK"
