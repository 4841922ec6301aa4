// ws_echo.js - an echo server on Node's `ws` package for bench/compare.
// Every text or binary message goes back unchanged, as the same type.
// usage: node ws_echo.js PORT   (prints "listening on 127.0.0.1:PORT")
// Environment: DEFLATE=1 accepts permessage-deflate (context takeover,
// window 15, level 3, threshold 64: herald echo's settings); TLS_CERT and
// TLS_KEY (PEM files) serve wss:// instead of ws://.
'use strict';
const fs = require('fs');
const https = require('https');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9004);
const deflate = process.env.DEFLATE === '1'
  ? { threshold: 64, zlibDeflateOptions: { level: 3 } }
  : false;
const opts = { perMessageDeflate: deflate, maxPayload: 64 * 1024 * 1024 };
let wss;
if (process.env.TLS_CERT) {
  const server = https.createServer({
    cert: fs.readFileSync(process.env.TLS_CERT),
    key: fs.readFileSync(process.env.TLS_KEY),
  });
  wss = new WebSocketServer({ ...opts, server });
  server.listen(port, '127.0.0.1', () => {
    console.log(`listening on 127.0.0.1:${server.address().port}`);
  });
} else {
  wss = new WebSocketServer({ ...opts, host: '127.0.0.1', port });
  wss.on('listening', () => {
    console.log(`listening on 127.0.0.1:${wss.address().port}`);
  });
}
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
