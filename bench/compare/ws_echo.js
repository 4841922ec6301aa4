// ws_echo.js - an echo server on Node's `ws` package for bench/compare.
// Every text or binary message goes back unchanged, as the same type.
// usage: node ws_echo.js PORT   (prints "listening on 127.0.0.1:PORT")
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9004);
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
wss.on('listening', () => {
  console.log(`listening on 127.0.0.1:${wss.address().port}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
