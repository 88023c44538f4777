// Times MeshCentral's decoder and encoder on the records of a setup.bin
// (scripts/bench-setupbin.sh): decode the file, then encode the decoded
// object back. Prints JSON {records, bytes, decode_s, encode_s, same}.
//
//   node bench.js <amt dir> <setup.bin>
'use strict';
const fs = require('fs');
const stack = require('./common.js').load(process.argv[2]);

const file = fs.readFileSync(process.argv[3]).toString('latin1');
let t0 = process.hrtime.bigint();
const obj = stack.AmtSetupBinDecode(file);
let t1 = process.hrtime.bigint();
if (obj === undefined) { process.stderr.write('MeshCentral could not decode the file\n'); process.exit(1); }
const t2 = process.hrtime.bigint();
const out = stack.AmtSetupBinEncode(obj);
const t3 = process.hrtime.bigint();
process.stdout.write(JSON.stringify({
    records: obj.records.length, bytes: file.length,
    decode_s: Number(t1 - t0) / 1e9, encode_s: Number(t3 - t2) / 1e9,
    same: out === file
}) + '\n');
