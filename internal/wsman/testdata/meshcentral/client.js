// Drives MeshCentral's own WS-Management stack (amt/amt-wsman-comm.js,
// amt/amt-wsman.js, amt/amt-xml.js, amt/amt.js, loaded unmodified from the
// folder given on the command line) against a provstick wsman.Server, and
// prints one JSON object with what it saw. Written for provstick's
// internal/wsman MeshCentral interop test; it is ours, not MeshCentral's.
//
// usage: node client.js AMT_DIR HOST PORT USER PASSWORD MEBX_PASSWORD
//
// MeshCentral's modules need nothing outside Node's standard library
// (net, tls, crypto, constants) and each other, so no shims are needed.
'use strict';
const path = require('path');

const [amtDir, host, port, user, pass, mebx] = process.argv.slice(2);
const CreateWsmanComm = require(path.resolve(amtDir, 'amt-wsman-comm.js'));
const WsmanStackCreateService = require(path.resolve(amtDir, 'amt-wsman.js'));
const AmtStackCreateService = require(path.resolve(amtDir, 'amt.js'));

function stack(password) {
    const comm = CreateWsmanComm(host, parseInt(port, 10), user, password, 0, null, null);
    return AmtStackCreateService(WsmanStackCreateService(comm));
}

const out = {};
function done() {
    process.stdout.write(JSON.stringify(out) + '\n');
    process.exit(0);
}
setTimeout(function () { out.error = 'timeout'; done(); }, 20000);

const amt = stack(pass);
const steps = [
    function (next) {
        amt.Get('AMT_GeneralSettings', function (s, name, response, status) {
            out.general = { status: status };
            if (status === 200) {
                out.general.method = response.Header.Method;
                out.general.resourceURI = response.Header.ResourceURI;
                out.general.realm = response.Body.DigestRealm;
                out.general.hostName = response.Body.HostName;
                out.general.networkInterfaceEnabled = response.Body.NetworkInterfaceEnabled;
            }
            next();
        });
    },
    function (next) {
        amt.Enum('CIM_SoftwareIdentity', function (s, name, items, status) {
            out.software = { status: status };
            if (status === 200) {
                out.software.items = items.map(function (it) {
                    return { InstanceID: it.InstanceID, VersionString: String(it.VersionString), IsEntity: it.IsEntity };
                });
            }
            next();
        });
    },
    function (next) {
        amt.AMT_SetupAndConfigurationService_SetMEBxPassword(mebx, function (s, name, response, status) {
            out.mebx = { status: status };
            if (status === 200) {
                out.mebx.method = response.Header.Method;
                out.mebx.returnValue = response.Body.ReturnValue;
                out.mebx.returnValueStr = response.Body.ReturnValueStr;
            }
            next();
        });
    },
    function (next) {
        // Too short: the fake device answers INVALID_PASSWORD (2054).
        amt.AMT_SetupAndConfigurationService_SetMEBxPassword('short', function (s, name, response, status) {
            out.mebxShort = { status: status };
            if (status === 200) {
                out.mebxShort.returnValue = response.Body.ReturnValue;
                out.mebxShort.returnValueStr = response.Body.ReturnValueStr;
            }
            next();
        });
    },
    function (next) {
        amt.Get('AMT_NoSuchClass', function (s, name, response, status) {
            out.unknownClass = { status: status };
            if (response && response.Header) { out.unknownClass.wsmanError = response.Header.WsmanError || null; }
            next();
        });
    },
    function (next) {
        stack(pass + 'x').Get('AMT_GeneralSettings', function (s, name, response, status) {
            out.wrongPassword = { status: status };
            next();
        });
    },
];

(function run(i) {
    if (i >= steps.length) { done(); return; }
    steps[i](function () { run(i + 1); });
})(0);
