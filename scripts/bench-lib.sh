# Sourced by scripts/bench-*.sh. One machine-readable line per figure for
# `make bench` (tools/benchreport turns them into bench/report.md):
#
#   figure NAME OURS PEER PEER_VALUE UNIT higher|lower [TARGET]
#
# A value that is not a number (a failed peer, say) is written as 0, which
# the report shows as "n/a" rather than as a ratio.
figure() {
	local ours=$2 peerv=$4
	[[ $ours =~ ^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]] || ours=0
	[[ $peerv =~ ^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]] || peerv=0
	printf '@figure {"name":"%s","ours":%s,"peer":"%s","peer_value":%s,"unit":"%s","better":"%s","target":"%s"}\n' \
		"${1//\"/\'}" "$ours" "${3//\"/\'}" "$peerv" "$5" "$6" "${7:-}"
}
