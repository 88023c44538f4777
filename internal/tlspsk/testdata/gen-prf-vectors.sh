#!/usr/bin/env bash
# Regenerates prf-vectors.txt with OpenSSL's TLS1-PRF KDF (`openssl kdf`),
# an implementation independent of ours. See README.md.
set -euo pipefail
cd "$(dirname "$0")"
hexof() { printf %s "$1" | od -An -tx1 | tr -d ' \n'; }
kdf() { # digest secret-hex seed-hex length
	openssl kdf -keylen "$4" -kdfopt "digest:$1" -kdfopt "hexsecret:$2" -kdfopt "hexseed:$3" TLS1-PRF | tr -d ':\n' | tr 'A-F' 'a-f'
}
pps=NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ
premaster="0020$(printf '00%.0s' $(seq 32))0020$(hexof "$pps")"
cr=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
sr=f0e0d0c0b0a090807060504030201000ffeeddccbbaa99887766554433221100
{
	echo "# name digest secret seed(label|seed) length output — made by gen-prf-vectors.sh with $(openssl version | cut -d' ' -f1-2)"
	for d in MD5-SHA1 SHA256; do
		seed="$(hexof 'master secret')$cr$sr"
		echo "master-$d $d $premaster $seed 48 $(kdf $d "$premaster" "$seed" 48)"
		master=$(kdf $d "$premaster" "$seed" 48)
		seed="$(hexof 'key expansion')$sr$cr"
		echo "keyexp-$d $d $master $seed 136 $(kdf $d "$master" "$seed" 136)"
		seed="$(hexof 'client finished')$(printf %s "transcript" | openssl dgst -sha256 -r | cut -d' ' -f1)"
		echo "finished-$d $d $master $seed 12 $(kdf $d "$master" "$seed" 12)"
		# odd-length secret: the TLS 1.0 halves share the middle byte
		echo "odd-$d $d 0102030405 $(hexof 'test label')0a0b0c 100 $(kdf $d 0102030405 "$(hexof 'test label')0a0b0c" 100)"
	done
} > prf-vectors.txt
