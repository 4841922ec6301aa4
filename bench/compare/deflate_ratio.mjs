// deflate_ratio.mjs - how many bytes an echo server's permessage-deflate
// puts on the wire per message: the compression ratio side of
// `bench/compare/run.sh --variant deflate`, which measures the CPU side.
//
// usage: node deflate_ratio.mjs URL SIZE COUNT [PAYLOAD_FILE]
//
// One connection (the `ws` package as client, offering permessage-deflate
// with context takeover both ways and 15-bit windows), COUNT messages of
// SIZE bytes, each sent once the echo of the one before has come back and
// been checked byte for byte. Payload: `abc...z` repeated (what
// `herald bench` sends), or, with PAYLOAD_FILE, consecutive slices of that
// file (e.g. bench/callgrind/chat_json.py's JSON chat events). The bytes
// the server sent are the TCP bytes this client read after the handshake
// (bytesRead of the upgrade response's socket), so they include the frame
// headers (2 bytes, 4
// from 126 bytes, 10 from 64 KiB of compressed payload).
//
// Prints one JSON line: {"url", "size", "count", "payload", "wire_bytes",
// "payload_bytes", "ratio", "extensions"}; exits 1 if the server did not
// agree to permessage-deflate or an echo differs.
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");

const [url, sizeArg, countArg, file] = process.argv.slice(2);
const size = Number(sizeArg);
const count = Number(countArg);
if (!url || !(size > 0) || !(count > 0)) {
  console.error("usage: node deflate_ratio.mjs URL SIZE COUNT [PAYLOAD_FILE]");
  process.exit(2);
}

const source = file ? fs.readFileSync(file, "latin1") : null;
if (source !== null && source.length < size) {
  console.error(`deflate_ratio: ${file} holds fewer than ${size} bytes`);
  process.exit(2);
}
function payload(i) {
  if (source === null) {
    let s = "";
    for (let k = 0; k < size; k++) s += String.fromCharCode(97 + (k % 26));
    return s;
  }
  const start = (i * size) % (source.length - size + 1);
  return source.slice(start, start + size);
}

const ws = new WebSocket(url, {
  perMessageDeflate: {
    clientNoContextTakeover: false,
    serverNoContextTakeover: false,
    serverMaxWindowBits: 15,
    clientMaxWindowBits: 15,
    threshold: 0,
  },
  maxPayload: 64 * 1024 * 1024,
});
const timer = setTimeout(() => {
  console.error("deflate_ratio: no answer within 60 s");
  process.exit(1);
}, 60000);

let sock = null;
ws.on("upgrade", (res) => {
  sock = res.socket;
});
ws.on("error", (e) => {
  console.error(`deflate_ratio: ${e.message}`);
  process.exit(1);
});
ws.on("open", () => {
  const ext = ws.extensions || "";
  if (!ext.includes("permessage-deflate")) {
    console.error(`deflate_ratio: ${url} did not agree to permessage-deflate`);
    process.exit(1);
  }
  const start = sock.bytesRead;
  let i = 0;
  let want = payload(0);
  ws.on("message", (data, isBinary) => {
    const got = Buffer.isBuffer(data) ? data.toString("latin1") : String(data);
    if (got !== want) {
      console.error(`deflate_ratio: echo ${i} differs (${got.length} bytes back, ${want.length} sent)`);
      process.exit(1);
    }
    i++;
    if (i < count) {
      want = payload(i);
      ws.send(want);
      return;
    }
    const wire = sock.bytesRead - start;
    clearTimeout(timer);
    console.log(
      JSON.stringify({
        url,
        size,
        count,
        payload: file ? file.split("/").pop() : "abc...z",
        wire_bytes: wire,
        payload_bytes: size * count,
        ratio: Number((wire / (size * count)).toFixed(4)),
        extensions: ext,
      })
    );
    ws.close();
  });
  ws.send(want);
});
