// Times N sequential Get AMT_GeneralSettings calls made by MeshCentral's own
// WS-Management stack (loaded unmodified from AMT_DIR) against a provstick
// wsman.Server, after one warm-up call that does the Digest handshake.
// Prints {"n": N, "ns": total nanoseconds, "ok": calls answered 200}.
// Ours, for BenchmarkGetPeer in internal/wsman.
//
// usage: node bench.js AMT_DIR HOST PORT USER PASSWORD N
'use strict';
const path = require('path');
const [amtDir, host, port, user, pass, nStr] = process.argv.slice(2);
const CreateWsmanComm = require(path.resolve(amtDir, 'amt-wsman-comm.js'));
const WsmanStackCreateService = require(path.resolve(amtDir, 'amt-wsman.js'));
const AmtStackCreateService = require(path.resolve(amtDir, 'amt.js'));
const amt = AmtStackCreateService(WsmanStackCreateService(CreateWsmanComm(host, parseInt(port, 10), user, pass, 0, null, null)));
const n = parseInt(nStr, 10);
let ok = 0;
function get(cb) { amt.Get('AMT_GeneralSettings', function (s, name, r, status) { if (status === 200 && r.Body.DigestRealm) ok++; cb(); }); }
get(function () {
    ok = 0;
    const start = process.hrtime.bigint();
    (function loop(i) {
        if (i >= n) {
            const ns = process.hrtime.bigint() - start;
            process.stdout.write(JSON.stringify({ n: n, ns: Number(ns), ok: ok }) + '\n');
            process.exit(0);
        }
        get(function () { loop(i + 1); });
    })(0);
});
