// Loads MeshCentral's amt/amt-setupbin.js from the folder given on the
// command line. That file calls three helpers MeshCentral defines
// elsewhere (its common code) and does not export: guidToStr, rstr2hex
// and hex2rstr. We supply stand-ins here; they are ours, written from
// what the names say (GUID mixed-endian swap, binary string <-> hex).
'use strict';
const path = require('path');

global.rstr2hex = function (s) {
    let r = '';
    for (let i = 0; i < s.length; i++) r += (s.charCodeAt(i) + 0x100).toString(16).substr(-2).toUpperCase();
    return r;
};
global.hex2rstr = function (h) {
    let r = '';
    for (let i = 0; i + 1 < h.length; i += 2) r += String.fromCharCode(parseInt(h.substr(i, 2), 16));
    return r;
};
// Swaps the first three groups of a 32-hex-digit GUID (EFI_GUID order).
global.guidToStr = function (g) {
    return g.substring(6, 8) + g.substring(4, 6) + g.substring(2, 4) + g.substring(0, 2) + '-' +
        g.substring(10, 12) + g.substring(8, 10) + '-' + g.substring(14, 16) + g.substring(12, 14) + '-' +
        g.substring(16, 20) + '-' + g.substring(20);
};

exports.load = function (amtDir) {
    const create = require(path.resolve(amtDir, 'amt-setupbin.js'));
    return create();
};
