// bun_echo.js - an echo server on Bun.serve (uWebSockets inside) for
// bench/compare. Every text or binary message goes back unchanged: Bun gives
// text as a string and binary as a Buffer, and ws.send() keeps the type.
// usage: bun bun_echo.js PORT   (prints "listening on 127.0.0.1:PORT")
// Environment: DEFLATE=1 accepts permessage-deflate with uWebSockets'
// dedicated (context takeover) compressor and decompressor, and compresses
// every echo; TLS_CERT and
// TLS_KEY (PEM files) serve wss:// instead of ws://.
const port = Number(process.argv[2] || 9005);
const deflate = process.env.DEFLATE === '1'
  ? { compress: 'dedicated', decompress: 'dedicated' }
  : false;
const tls = process.env.TLS_CERT
  ? { cert: Bun.file(process.env.TLS_CERT), key: Bun.file(process.env.TLS_KEY) }
  : undefined;
const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  tls,
  fetch(req, srv) {
    if (srv.upgrade(req)) {
      return undefined;
    }
    return new Response('WebSocket only\n', { status: 426 });
  },
  websocket: {
    perMessageDeflate: deflate,
    maxPayloadLength: 64 * 1024 * 1024,
    backpressureLimit: 64 * 1024 * 1024,
    idleTimeout: 0,
    message(ws, msg) {
      // Bun compresses a message only when send() is asked to (its second
      // argument); without it the echoes went out uncompressed.
      ws.send(msg, deflate !== false);
    },
  },
});
console.log(`listening on 127.0.0.1:${server.port}`);
