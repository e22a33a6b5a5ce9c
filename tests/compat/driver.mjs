// Runs a scenario of @nangohq/node calls against a live server, in order, and prints one
// JSON line per call:
//   {"ok": true, "value": ...}                      the call resolved ("value" absent if undefined)
//   {"ok": false, "status", "data", "headers"}      the call threw with an HTTP response
//   {"ok": false, "status": null, "error": "..."}   the call threw without one (client-side)
//
// Scenario (a file path as the only argument, or stdin):
//   {"host": "http://127.0.0.1:1234", "secretKey": "...",
//    "calls": [{"method": "getConnection", "args": ["github", "conn-1"], "secretKey"?: "..."}]}
//
// In the scenario, {"$bytes": "<base64>"} stands for a Buffer and {"$undefined": true} for
// undefined (e.g. to skip a positional argument). AxiosResponses (proxy, deleteIntegration,
// setMetadata, ...) are reduced to {status, headers, data}; Buffers in results become
// {"$bytes": "<base64>"}.
import { readFileSync } from 'node:fs';
import { Nango } from '@nangohq/node';

function revive(_key, value) {
    if (value && typeof value === 'object' && !Array.isArray(value)) {
        if (typeof value.$bytes === 'string') {
            return Buffer.from(value.$bytes, 'base64');
        }
        if (value.$undefined === true) {
            return undefined;
        }
    }
    return value;
}

function plain(value) {
    if (Buffer.isBuffer(value)) {
        return { $bytes: value.toString('base64') };
    }
    if (value instanceof ArrayBuffer) {
        return { $bytes: Buffer.from(value).toString('base64') };
    }
    if (isAxiosResponse(value)) {
        return { status: value.status, headers: headersOf(value.headers), data: plain(value.data) };
    }
    return value;
}

function isAxiosResponse(value) {
    return Boolean(value) && typeof value === 'object' && 'status' in value && 'headers' in value && 'config' in value;
}

function headersOf(headers) {
    const raw = headers && typeof headers.toJSON === 'function' ? headers.toJSON() : { ...headers };
    return Object.fromEntries(Object.entries(raw).map(([name, v]) => [name.toLowerCase(), v]));
}

function print(result) {
    process.stdout.write(JSON.stringify(result) + '\n');
}

const source = process.argv[2] && process.argv[2] !== '-' ? readFileSync(process.argv[2], 'utf8') : readFileSync(0, 'utf8');
const scenario = JSON.parse(source, revive);
const clients = new Map();

function clientFor(secretKey) {
    if (!clients.has(secretKey)) {
        clients.set(secretKey, new Nango({ secretKey, host: scenario.host }));
    }
    return clients.get(secretKey);
}

for (const call of scenario.calls) {
    const nango = clientFor(call.secretKey ?? scenario.secretKey);
    try {
        if (typeof nango[call.method] !== 'function') {
            throw new Error(`@nangohq/node has no method ${call.method}`);
        }
        const value = await nango[call.method](...(call.args ?? []));
        print(value === undefined ? { ok: true } : { ok: true, value: plain(value) });
    } catch (err) {
        if (err && err.response) {
            const { status, data, headers } = err.response;
            print({ ok: false, status, data: plain(data), headers: headersOf(headers) });
        } else {
            print({ ok: false, status: null, error: String(err && err.message ? err.message : err) });
        }
    }
}
