// bun_pubsub.js - a push server on Bun.serve's pub/sub (uWebSockets topics)
// for bench/fanout, speaking the subset of docs/protocol.md that
// `herald bench --mode fanout` uses: connect, subscribe, publish, ping, one
// JSON command per line; pushes are {"push":{"channel","pub":{"offset",
// "data"}}}, encoded once per publication and sent to every subscriber by
// server.publish(). No history, presence or auth: only the fan-out.
// usage: bun bun_pubsub.js PORT   (prints "listening on 127.0.0.1:PORT")
const port = Number(process.argv[2] || 0);
const offsets = new Map();
let nextClient = 1;

function reply(ws, id, result) {
  ws.send(JSON.stringify({ id, result }));
}

function fail(ws, id, code, message) {
  ws.send(JSON.stringify({ id, error: { code, message, temporary: false } }));
}

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
    maxPayloadLength: 1 << 20,
    // herald serve's client_output_cap: a slower subscriber is cut off.
    backpressureLimit: 4 << 20,
    closeOnBackpressureLimit: true,
    idleTimeout: 0,
    message(ws, msg) {
      for (const line of String(msg).split('\n')) {
        if (line === '') {
          continue;
        }
        let cmd;
        try {
          cmd = JSON.parse(line);
        } catch {
          ws.close(1007, 'invalid JSON');
          return;
        }
        const id = cmd.id;
        if (cmd.connect) {
          reply(ws, id, { client: String(nextClient++), user: '', version: 'bun', ping: 25 });
        } else if (cmd.subscribe) {
          const ch = cmd.subscribe.channel;
          ws.subscribe(ch);
          reply(ws, id, { epoch: 'bun', offset: offsets.get(ch) || 0 });
        } else if (cmd.publish) {
          const ch = cmd.publish.channel;
          const offset = (offsets.get(ch) || 0) + 1;
          offsets.set(ch, offset);
          server.publish(ch, JSON.stringify({
            push: { channel: ch, pub: { offset, data: cmd.publish.data } },
          }));
          reply(ws, id, { epoch: 'bun', offset });
        } else if (cmd.ping) {
          reply(ws, id, {});
        } else {
          fail(ws, id, 100, 'unknown command');
        }
      }
    },
  },
});
console.log(`listening on 127.0.0.1:${server.port}`);
