#!/usr/bin/env bash
# Times provstick's setup.bin encoder and decoder against MeshCentral's
# (amt/amt-setupbin.js, a peer we did not write) on the same 100,000 PSK
# records in one run, and prints both figures and both ratios.
#   ours:        encode = PSK → record → Writer into memory; decode = NewReader
#                from memory (entries decoded, check characters verified)
#   MeshCentral: decode = AmtSetupBinDecode of our file from memory;
#                encode = AmtSetupBinEncode of the object it decoded
# Each figure is the best of RUNS runs (default 3). N overrides the count.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-100000}
runs=${RUNS:-3}
mc=${PROVSTICK_MESHCENTRAL_DIR:-.cache/meshcentral/1.1.55}
if ! command -v node >/dev/null; then
	echo "bench-setupbin: node not on PATH: run scripts/install-deps.sh" >&2
	exit 1
fi
if [ ! -f "$mc/amt/amt-setupbin.js" ]; then
	echo "bench-setupbin: $mc/amt/amt-setupbin.js missing: run scripts/install-deps.sh" >&2
	exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "bench-setupbin: $n PSK records, format 4.0 scrambled, best of $runs runs ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
read -r _ bytes ours_enc ours_dec < <(go run ./setupbin/internal/benchcmd -n "$n" -runs "$runs" -o "$tmp/setup.bin")
read -r mc_n _ mc_enc mc_dec mc_same < <(node setupbin/testdata/meshcentral/bench.js "$mc/amt" "$tmp/setup.bin" "$runs")
if [ "$mc_n" != "$n" ]; then
	echo "bench-setupbin: MeshCentral decoded $mc_n records, want $n" >&2
	exit 1
fi
awk -v n="$n" -v b="$bytes" -v oe="$ours_enc" -v od="$ours_dec" -v me="$mc_enc" -v md="$mc_dec" -v same="$mc_same" 'BEGIN {
	mb = b / 1e6
	printf "%-12s %10s %12s %10s %12s\n", "", "encode s", "encode MB/s", "decode s", "decode MB/s"
	printf "%-12s %10.3f %12.0f %10.3f %12.0f\n", "provstick", oe, mb / oe, od, mb / od
	printf "%-12s %10.3f %12.0f %10.3f %12.0f\n", "MeshCentral", me, mb / me, md, mb / md
	printf "ratio (MeshCentral / provstick): encode %.1fx (target >= 25x), decode %.1fx (target >= 5x)\n", me / oe, md / od
	printf "MeshCentral re-encoded our file byte for byte: %s\n", same
	printf "@figure {\"name\":\"encode %d PSK records\",\"ours\":%.4f,\"peer\":\"MeshCentral amt-setupbin.js\",\"peer_value\":%.4f,\"unit\":\"s\",\"better\":\"lower\",\"target\":\"≥ 25×\"}\n", n, oe, me
	printf "@figure {\"name\":\"decode %d PSK records\",\"ours\":%.4f,\"peer\":\"MeshCentral amt-setupbin.js\",\"peer_value\":%.4f,\"unit\":\"s\",\"better\":\"lower\",\"target\":\"≥ 5×\"}\n", n, od, md
}'
