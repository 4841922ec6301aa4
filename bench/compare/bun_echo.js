// bun_echo.js - an echo server on Bun.serve (uWebSockets inside) for
// bench/compare. Every text or binary message goes back unchanged: Bun gives
// text as a string and binary as a Buffer, and ws.send() keeps the type.
// usage: bun bun_echo.js PORT   (prints "listening on 127.0.0.1:PORT")
const port = Number(process.argv[2] || 9005);
const server = Bun.serve({
  hostname: '127.0.0.1',
  port,
  fetch(req, srv) {
    if (srv.upgrade(req)) {
      return undefined;
    }
    return new Response('WebSocket only\n', { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    maxPayloadLength: 64 * 1024 * 1024,
    backpressureLimit: 64 * 1024 * 1024,
    idleTimeout: 0,
    message(ws, msg) {
      ws.send(msg);
    },
  },
});
console.log(`listening on 127.0.0.1:${server.port}`);
