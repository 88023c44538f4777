// Times MeshCentral's decoder and encoder on the records of a setup.bin
// (scripts/bench-setupbin.sh): decode the file, then encode the decoded
// object back, each the best of <runs> runs. Prints one line:
// "<records> <bytes> <encode seconds> <decode seconds> <same bytes>".
//
//   node bench.js <amt dir> <setup.bin> [runs]
'use strict';
const fs = require('fs');
const stack = require('./common.js').load(process.argv[2]);
const runs = parseInt(process.argv[4] || '3', 10);

const file = fs.readFileSync(process.argv[3]).toString('latin1');
let obj, out, dec = Infinity, enc = Infinity;
for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    obj = stack.AmtSetupBinDecode(file);
    const t1 = process.hrtime.bigint();
    if (obj === undefined) { process.stderr.write('MeshCentral could not decode the file\n'); process.exit(1); }
    dec = Math.min(dec, Number(t1 - t0) / 1e9);
}
for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    out = stack.AmtSetupBinEncode(obj);
    const t1 = process.hrtime.bigint();
    enc = Math.min(enc, Number(t1 - t0) / 1e9);
}
process.stdout.write([obj.records.length, file.length, enc.toFixed(6), dec.toFixed(6), out === file].join(' ') + '\n');
