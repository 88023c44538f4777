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
# nonces, key, certificate, TLS, commit, verification). Figures are medians
# of COUNT runs (the machine may be shared); the load average is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

BENCHTIME=${BENCHTIME:-2s}
COUNT=${COUNT:-5}
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
