// Driver for setupbin/meshcentral_test.go.
//
//   node driver.js <amt dir> decode <setup.bin>
//       Decodes the file with MeshCentral's AmtSetupBinDecode and prints
//       JSON: {ok, error, header fields, records: [{..., variables:
//       [{moduleid, varid, length, type, num | hex | guid}]}]}.
//   node driver.js <amt dir> encode <spec.json> <out.bin>
//       Builds MeshCentral's object from spec.json ({version, minor,
//       flags, chunkCounts, records: [{flags, variables: [{moduleid,
//       varid, num | hex | guid}]}]}) and writes AmtSetupBinEncode's output.
'use strict';
const fs = require('fs');
const stack = require('./common.js').load(process.argv[2]);
const cmd = process.argv[3];

function hex(s) { return Buffer.from(s, 'latin1').toString('hex'); }

if (cmd === 'decode') {
    const file = fs.readFileSync(process.argv[4]).toString('latin1');
    let out;
    try {
        const obj = stack.AmtSetupBinDecode(file);
        if (obj === undefined) {
            out = { ok: false, error: 'AmtSetupBinDecode returned undefined' };
        } else {
            out = {
                ok: true,
                fileType: obj.fileType, recordChunkCount: obj.recordChunkCount,
                recordHeaderByteCount: obj.recordHeaderByteCount, recordNumber: obj.recordNumber,
                majorVersion: obj.majorVersion, minorVersion: obj.minorVersion, flags: obj.flags,
                dataRecordsConsumed: obj.dataRecordsConsumed, dataRecordChunkCount: obj.dataRecordChunkCount,
                records: obj.records.map(function (r) {
                    return {
                        typeIdentifier: r.typeIdentifier, flags: r.flags, chunkCount: r.chunkCount,
                        headerByteCount: r.headerByteCount, number: r.number,
                        variables: r.variables.map(function (v) {
                            const o = { moduleid: v.moduleid, varid: v.varid, length: v.length, type: v.type };
                            if (typeof v.value === 'number') o.num = v.value;
                            else if (v.type === 4) o.guid = v.value;
                            else o.hex = hex(v.value);
                            return o;
                        })
                    };
                })
            };
        }
    } catch (e) {
        out = { ok: false, error: String(e) };
    }
    process.stdout.write(JSON.stringify(out));
} else if (cmd === 'encode') {
    const spec = JSON.parse(fs.readFileSync(process.argv[4], 'utf8'));
    const obj = stack.AmtSetupBinCreate(spec.version, spec.flags);
    obj.minorVersion = spec.minor || 0;
    if (spec.chunkCounts === false) {
        // What MeshCommander's "new setup.bin" left: no chunk counts.
        delete obj.recordChunkCount;
        delete obj.dataRecordChunkCount;
    }
    obj.records = spec.records.map(function (r) {
        return {
            typeIdentifier: 1, flags: r.flags,
            variables: r.variables.map(function (v) {
                let value;
                if (v.num !== undefined) value = v.num;
                else if (v.guid !== undefined) value = v.guid;
                else value = Buffer.from(v.hex, 'hex').toString('latin1');
                return { moduleid: v.moduleid, varid: v.varid, value: value };
            })
        };
    });
    fs.writeFileSync(process.argv[5], Buffer.from(stack.AmtSetupBinEncode(obj), 'latin1'));
} else {
    process.stderr.write('usage: driver.js <amt dir> decode <file> | encode <spec.json> <out>\n');
    process.exit(2);
}
