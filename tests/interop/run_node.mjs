#!/usr/bin/env node
// Interop with the Node `ws` library, both ways.
//
//   node run_node.mjs HERALD_BINARY
//
// Part 1: a ws client against `herald echo`.
// Part 2: a ws server against `herald client`.
//
// Prints one line per check and ends with "N passed, N failed"; exits 1 on
// any failure, 77 when `ws` cannot be installed (run_node.sh installs it).

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let WebSocket, WebSocketServer;
try {
  ({ WebSocket, WebSocketServer } = require('ws'));
} catch (e) {
  console.log(`SKIPPED: the ws package is not installed (${e.code})`);
  process.exit(77);
}

const CHECK_TIMEOUT = 30000;
const SIZES = [0, 125, 126, 65535, 65536];
const BIG = 16 << 20;
let HERALD;
let passed = 0;
let failed = 0;

function report(name, ok, detail) {
  if (ok) {
    passed++;
    console.log(`ok ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${detail ? ': ' + detail : ''}`);
  }
}

function expect(cond, detail) {
  if (!cond) throw new Error(detail);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Runs one check with a timeout; a throw fails it.
async function check(name, fn) {
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error('timeout')), CHECK_TIMEOUT);
  });
  try {
    await Promise.race([fn(), timeout]);
    report(name, true);
  } catch (e) {
    report(name, false, e.message);
  } finally {
    clearTimeout(timer);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${what}: timeout`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---- processes ---------------------------------------------------------------

// Exit promise of a child: resolves to its code (or the signal name).
function exited(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve(child.exitCode ?? child.signalCode);
    } else {
      child.once('exit', (code, sig) => resolve(code ?? sig));
    }
  });
}

// `herald echo` on 127.0.0.1, port 0; resolves once it printed its port.
function startEcho(...args) {
  const child = spawn(HERALD, ['echo', '--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return withTimeout(
    new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
        if (m) resolve({ child, port: +m[1], url: `ws://127.0.0.1:${m[1]}/` });
      });
      child.once('exit', (code) => reject(new Error(`echo exited ${code}`)));
    }),
    10000,
    'herald echo start',
  );
}

async function stopChild(child, sig = 'SIGTERM', ms = 10000) {
  if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  try {
    return await withTimeout(exited(child), ms, 'exit');
  } catch {
    child.kill('SIGKILL');
    await exited(child);
    return null;
  }
}

// `herald client` with pipes; collects stdout and stderr.
class Client {
  constructor(url, ...args) {
    this.child = spawn(HERALD, ['client', url, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.outChunks = [];
    this.errText = '';
    this.child.stdout.on('data', (d) => this.outChunks.push(d));
    this.child.stderr.on('data', (d) => (this.errText += d));
    this.child.stdin.on('error', () => {}); // EPIPE after it exited
    this.closed = Promise.all([
      new Promise((r) => this.child.stdout.on('close', r)),
      new Promise((r) => this.child.stderr.on('close', r)),
    ]);
  }
  get out() {
    return Buffer.concat(this.outChunks);
  }
  get err() {
    return this.errText.trim();
  }
  write(data) {
    return new Promise((r) => this.child.stdin.write(data, r));
  }
  closeStdin() {
    this.child.stdin.end();
  }
  async wait(ms = 15000) {
    const rc = await stopAfter(this.child, ms);
    this.closeStdin();
    await this.closed;
    return rc;
  }
}

// Waits up to ms for an exit, then kills: returns the code, or null.
async function stopAfter(child, ms) {
  try {
    return await withTimeout(exited(child), ms, 'exit');
  } catch {
    child.kill('SIGKILL');
    await exited(child);
    return null;
  }
}

// ---- ws helpers ---------------------------------------------------------------

function connect(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 64 << 20, ...opts });
    attachQueue(ws);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

// Gives ws a next() that resolves with the next message {data, isBinary},
// and a closed promise with {code, reason}.
function attachQueue(ws) {
  const queue = [];
  const waiters = [];
  ws.on('message', (data, isBinary) => {
    const m = { data, isBinary };
    if (waiters.length) waiters.shift().resolve(m);
    else queue.push(m);
  });
  ws.closed = new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      for (const w of waiters.splice(0)) w.reject(new Error(`closed ${code}`));
      resolve({ code, reason: reason.toString() });
    });
  });
  ws.on('error', () => {}); // reported through close
  ws.next = () =>
    queue.length
      ? Promise.resolve(queue.shift())
      : new Promise((resolve, reject) => waiters.push({ resolve, reject }));
}

function sameMessage(got, data, isBinary) {
  const want = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return got.isBinary === isBinary && Buffer.from(got.data).equals(want);
}

function frame(opcode, payload = Buffer.alloc(0), { fin = true, mask = false, rsv = 0 } = {}) {
  payload = Buffer.from(payload);
  const n = payload.length;
  let head;
  if (n < 126) {
    head = Buffer.from([0, n]);
  } else if (n < 65536) {
    head = Buffer.alloc(4);
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else {
    head = Buffer.alloc(10);
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  head[0] = (fin ? 0x80 : 0) | (rsv << 4) | opcode;
  if (!mask) return Buffer.concat([head, payload]);
  head[1] |= 0x80;
  const key = crypto.randomBytes(4);
  const masked = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
  return Buffer.concat([head, key, masked]);
}

// Reads frames from a raw socket until a close frame: resolves its code.
function readClose(sock) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.length < 2) return;
        let n = buf[1] & 0x7f;
        let off = 2;
        if (n === 126) {
          if (buf.length < 4) return;
          n = buf.readUInt16BE(2);
          off = 4;
        } else if (n === 127) {
          if (buf.length < 10) return;
          n = Number(buf.readBigUInt64BE(2));
          off = 10;
        }
        if (buf[1] & 0x80) off += 4; // servers never mask; tolerate it
        if (buf.length < off + n) return;
        const op = buf[0] & 0x0f;
        const payload = buf.subarray(off, off + n);
        buf = buf.subarray(off + n);
        if (op === 8) {
          resolve(payload.length >= 2 ? payload.readUInt16BE(0) : 1005);
          return;
        }
      }
    });
    sock.on('error', reject);
    sock.on('close', () => reject(new Error('socket closed without close frame')));
  });
}

// ---- part 1: ws client -> herald echo ---------------------------------------------

async function clientVsEcho() {
  let echo = await startEcho();
  // A check that kills the server must not fail every later one too.
  const revive = async () => {
    if (echo.child.exitCode !== null || echo.child.signalCode !== null) {
      console.log(`herald echo died (${echo.child.exitCode ?? echo.child.signalCode}); restarting it`);
      echo = await startEcho();
    }
  };
  const small = await startEcho('--max-message', '1K');
  console.log(`herald echo listening on 127.0.0.1:${echo.port} (and :${small.port} with --max-message 1K)`);

  async function roundtrip(msgs) {
    const ws = await connect(echo.url);
    for (const [data, isBinary] of msgs) {
      ws.send(data, { binary: isBinary });
      const got = await ws.next();
      expect(sameMessage(got, data, isBinary),
        `sent ${isBinary ? 'binary' : 'text'} of ${data.length}, got ${got.isBinary ? 'binary' : 'text'} of ${got.data.length}`);
    }
    ws.close(1000);
    await ws.closed;
  }

  await check('node->echo text', () => roundtrip([['hello', false], ['h\u00e9llo \u{1F600}', false]]));
  await check('node->echo binary', () => roundtrip([[Buffer.from([0, 1, 254, 255]), true]]));
  await check('node->echo empty text and binary', () => roundtrip([['', false], [Buffer.alloc(0), true]]));
  await check('node->echo text sizes 0/125/126/65535/65536',
    () => roundtrip(SIZES.map((n) => ['a'.repeat(n), false])));
  await check('node->echo binary sizes 0/125/126/65535/65536',
    () => roundtrip(SIZES.map((n) => [crypto.randomBytes(n), true])));
  await check('node->echo 16 MiB binary', () => roundtrip([[crypto.randomBytes(BIG), true]]));
  await check('node->echo 16 MiB text', () => roundtrip([['x'.repeat(BIG), false]]));

  await check('node->echo fragmented text and binary', async () => {
    const ws = await connect(echo.url);
    ws.send('fra', { fin: false });
    ws.send('gmen', { fin: false });
    ws.send('ted \u00e9', { fin: true });
    expect(sameMessage(await ws.next(), 'fragmented \u00e9', false), 'text');
    const parts = [0, 1, 2, 3, 4].map((i) => Buffer.alloc(1000, i));
    parts.forEach((p, i) => ws.send(p, { binary: true, fin: i === 4 }));
    expect(sameMessage(await ws.next(), Buffer.concat(parts), true), 'binary');
    ws.close(1000);
    await ws.closed;
  });

  await check('node->echo ping gets pong (0, 9, 125 bytes)', async () => {
    const ws = await connect(echo.url);
    for (const p of [Buffer.alloc(0), Buffer.from('ping-data'), Buffer.alloc(125, 120)]) {
      const pong = new Promise((r) => ws.once('pong', r));
      ws.ping(p);
      const got = await withTimeout(pong, 5000, 'pong');
      expect(got.equals(p), `pong payload ${got.length} bytes`);
    }
    ws.close(1000);
    await ws.closed;
  });

  for (const [code, reason] of [[1000, 'bye now'], [4000, 'custom']]) {
    await check(`node->echo peer closes ${code} with reason`, async () => {
      const ws = await connect(echo.url);
      ws.close(code, reason);
      const c = await ws.closed;
      expect(c.code === code, `server answered ${c.code}, want ${code}`);
    });
  }

  await check('node->echo peer aborts TCP (RST); server survives', async () => {
    const ws = await connect(echo.url);
    ws.send('x'.repeat(100000));
    const sock = ws._socket;
    if (sock.resetAndDestroy) sock.resetAndDestroy();
    else sock.destroy();
    await sleep(200);
    expect(echo.child.exitCode === null && echo.child.signalCode === null,
      `echo died: ${echo.child.exitCode ?? echo.child.signalCode}`);
    await roundtrip([['still alive', false]]);
  });

  async function rawBad(frames, wantCode) {
    await revive();
    const sock = net.connect(echo.port, '127.0.0.1');
    await new Promise((r, j) => sock.once('connect', r).once('error', j));
    const key = crypto.randomBytes(16).toString('base64');
    sock.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    const head = await new Promise((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const onData = (d) => {
        buf = Buffer.concat([buf, d]);
        const end = buf.indexOf('\r\n\r\n');
        if (end >= 0) {
          sock.off('data', onData);
          const rest = buf.subarray(end + 4);
          if (rest.length) sock.unshift(rest);
          resolve(buf.subarray(0, end).toString());
        }
      };
      sock.on('data', onData);
      sock.once('error', reject);
    });
    expect(head.startsWith('HTTP/1.1 101'), `handshake: ${head.slice(0, 40)}`);
    const closeCode = readClose(sock);
    for (const f of frames) sock.write(f);
    const code = await closeCode;
    sock.destroy();
    expect(code === wantCode, `close ${code}, want ${wantCode}`);
  }
  await check('node->echo reserved opcode -> 1002', () => rawBad([frame(3, 'x', { mask: true })], 1002));
  await check('node->echo unmasked frame -> 1002', () => rawBad([frame(1, 'x')], 1002));
  await check('node->echo RSV2 set -> 1002', () => rawBad([frame(1, 'x', { mask: true, rsv: 2 })], 1002));
  await check('node->echo close with reserved code 1004 -> 1002',
    () => rawBad([frame(8, Buffer.from([0x03, 0xec]), { mask: true })], 1002));
  await check('node->echo invalid UTF-8 -> 1007',
    () => rawBad([frame(1, Buffer.from([0xed, 0xa0, 0x80]), { mask: true })], 1007));

  await check('node->echo message over --max-message -> 1009', async () => {
    const ws = await connect(small.url);
    ws.send('y'.repeat(2000));
    const c = await ws.closed;
    expect(c.code === 1009, `close ${c.code}, want 1009`);
  });

  await check('node->echo SIGTERM -> peer sees 1001, echo exits 0', async () => {
    await revive();
    const ws = await connect(echo.url);
    ws.send('hi');
    await ws.next();
    const rc = await stopChild(echo.child);
    const c = await withTimeout(ws.closed, 5000, 'close');
    expect(c.code === 1001, `close ${c.code}, want 1001`);
    expect(rc === 0, `herald echo exit ${rc}, want 0`);
  });
  const rc = await stopChild(small.child);
  report('node->echo second echo exits 0 on SIGTERM', rc === 0, `exit ${rc}`);
  await stopChild(echo.child, 'SIGKILL');
}

// ---- part 2: ws server -> herald client --------------------------------------------

async function serverVsClient() {
  const handlers = new Map();
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    maxPayload: 64 << 20,
    handleProtocols: (protocols) => (protocols.has('chat2') ? 'chat2' : false),
    verifyClient: (info) => info.req.url !== '/forbidden',
  });
  await new Promise((r) => wss.once('listening', r));
  const port = wss.address().port;
  console.log(`node server listening on 127.0.0.1:${port}`);
  const url = (p) => `ws://127.0.0.1:${port}${p}`;
  wss.on('connection', (ws, req) => {
    attachQueue(ws);
    const h = handlers.get(req.url);
    h.run(ws, req).then(h.resolve, h.reject);
  });
  // Registers fn(ws, req) for a path; returns a promise of its result.
  const on = (p, fn) =>
    new Promise((resolve, reject) => handlers.set(p, { run: fn, resolve, reject }));

  await check('client stdin lines -> text, EOF -> close 1000, exit 0', async () => {
    const res = on('/lines', async (ws) => {
      const got = [];
      for (let i = 0; i < 3; i++) got.push((await ws.next()).data.toString());
      ws.send('reply one');
      ws.send(Buffer.from('\x01\x02raw', 'latin1'));
      got.push((await ws.next()).data.toString());
      return { got, close: await ws.closed };
    });
    const cl = new Client(url('/lines'));
    await cl.write(Buffer.from('hello\nh\u00e9llo\n\nlast line'));
    await sleep(300);
    cl.closeStdin();
    const { got, close } = await res;
    const rc = await cl.wait();
    expect(JSON.stringify(got) === JSON.stringify(['hello', 'h\u00e9llo', '', 'last line']), `server got ${JSON.stringify(got)}`);
    expect(close.code === 1000, `server saw ${close.code}`);
    // A binary message is written raw, with nothing added.
    expect(cl.out.equals(Buffer.from('reply one\n\x01\x02raw', 'latin1')), `stdout ${JSON.stringify(cl.out.toString())}`);
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
  });

  await check('client --binary --lines sends lines as binary (and empty)', async () => {
    const res = on('/binary', async (ws) => [await ws.next(), await ws.next()]);
    const cl = new Client(url('/binary'), '--binary', '--lines');
    await cl.write(Buffer.from([0x61, 0x62, 0xff, 0x0a, 0x0a]));
    cl.closeStdin();
    const got = await res;
    const rc = await cl.wait();
    expect(sameMessage(got[0], Buffer.from([0x61, 0x62, 0xff]), true), 'first');
    expect(sameMessage(got[1], Buffer.alloc(0), true), 'empty');
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
  });

  await check('client 16 MiB stdin line -> one message', async () => {
    const res = on('/bigline', async (ws) => ws.next());
    const cl = new Client(url('/bigline'));
    await cl.write(Buffer.concat([Buffer.alloc(BIG, 0x7a), Buffer.from('\n')]));
    const got = await res;
    cl.closeStdin();
    const rc = await cl.wait();
    expect(sameMessage(got, Buffer.alloc(BIG, 0x7a), false), `got ${got.data.length} bytes`);
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
  });

  await check('client prints sizes 0..65536, fragmented, binary; server close 1000 -> exit 0', async () => {
    on('/sizes', async (ws) => {
      for (const n of SIZES) ws.send('a'.repeat(n));
      ws.send('frag', { fin: false });
      ws.send('ment', { fin: false });
      ws.send('ed', { fin: true });
      ws.send(Buffer.alloc(70000, 0x42));
      ws.close(1000, 'done');
    });
    const cl = new Client(url('/sizes'));
    const rc = await cl.wait();
    const want = Buffer.concat([
      ...SIZES.map((n) => Buffer.from('a'.repeat(n) + '\n')),
      Buffer.from('fragmented\n'),
      Buffer.alloc(70000, 0x42),
    ]);
    expect(cl.out.equals(want), `stdout ${cl.out.length} bytes, want ${want.length}`);
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
  });

  await check('client --echo: text/binary/empty, sizes, 16 MiB, fragments, ping->pong', async () => {
    const res = on('/echo', async (ws) => {
      const msgs = [['', false], [Buffer.alloc(0), true], ['h\u00e9llo', false],
        ...SIZES.map((n) => ['t'.repeat(n), false]),
        ...SIZES.map((n) => [crypto.randomBytes(n), true]),
        [crypto.randomBytes(BIG), true]];
      for (const [data, isBinary] of msgs) {
        ws.send(data, { binary: isBinary });
        const got = await ws.next();
        expect(sameMessage(got, data, isBinary), `echo of ${isBinary ? 'binary' : 'text'} ${data.length}`);
      }
      ws.send('fr', { fin: false });
      ws.send('ag', { fin: true });
      expect(sameMessage(await ws.next(), 'frag', false), 'fragmented text');
      const parts = [65, 66, 67, 68].map((c) => Buffer.alloc(30000, c));
      parts.forEach((p, i) => ws.send(p, { binary: true, fin: i === 3 }));
      expect(sameMessage(await ws.next(), Buffer.concat(parts), true), 'fragmented binary');
      const pong = new Promise((r) => ws.once('pong', r));
      ws.ping('are you there');
      expect((await withTimeout(pong, 5000, 'pong')).toString() === 'are you there', 'pong payload');
      ws.close(1000, 'thanks');
      return ws.closed;
    });
    const cl = new Client(url('/echo'), '--echo');
    const close = await res;
    const rc = await cl.wait();
    expect(close.code === 1000, `close ${close.code}`);
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
    expect(cl.out.length === 0, `--echo printed ${cl.out.length} bytes`);
  });

  await check('client -H, --subprotocol, --origin', async () => {
    on('/nego', async (ws, req) => {
      ws.send(`${ws.protocol}|${req.headers['x-test']}|${req.headers.origin}`);
      ws.close(1000);
    });
    const cl = new Client(url('/nego'), '-H', 'X-Test: some value', '--subprotocol', 'chat1',
      '--subprotocol', 'chat2', '--origin', 'http://example.test');
    const rc = await cl.wait();
    expect(cl.out.toString() === 'chat2|some value|http://example.test\n', `stdout ${JSON.stringify(cl.out.toString())}`);
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
  });

  for (const [code, reason, want] of [[1000, 'bye', 0], [1001, 'going', 0], [4000, 'custom', 4]]) {
    await check(`client: server closes ${code} '${reason}' -> exit ${want}`, async () => {
      on(`/close${code}`, async (ws) => ws.close(code, reason));
      const cl = new Client(url(`/close${code}`));
      const rc = await cl.wait();
      expect(rc === want, `exit ${rc}, want ${want}: ${cl.err}`);
      if (want === 4) expect(cl.err.includes(String(code)) && cl.err.includes(reason), `stderr ${cl.err}`);
    });
  }

  await check('client: server closes without a code (1005) -> exit 0', async () => {
    on('/close1005', async (ws) => ws.close());
    const cl = new Client(url('/close1005'));
    const rc = await cl.wait();
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
  });

  await check('client: server aborts TCP (RST) -> exit 3', async () => {
    on('/abort', async (ws) => {
      ws.send('about to vanish');
      await sleep(200);
      if (ws._socket.resetAndDestroy) ws._socket.resetAndDestroy();
      else ws.terminate();
    });
    const cl = new Client(url('/abort'));
    const rc = await cl.wait();
    expect(cl.out.toString() === 'about to vanish\n', `stdout ${JSON.stringify(cl.out.toString())}`);
    expect(rc === 3, `exit ${rc}, want 3: ${cl.err}`);
  });

  await check('client: server terminates (FIN, no close frame) -> exit 3', async () => {
    on('/terminate', async (ws) => ws.terminate());
    const cl = new Client(url('/terminate'));
    const rc = await cl.wait();
    expect(rc === 3, `exit ${rc}, want 3: ${cl.err}`);
  });

  await check('client: SIGTERM -> close 1001, exit 0', async () => {
    let opened;
    const isOpen = new Promise((r) => (opened = r));
    const res = on('/sigterm', async (ws) => {
      opened();
      return ws.closed;
    });
    const cl = new Client(url('/sigterm'));
    await isOpen;
    cl.child.kill('SIGTERM');
    const close = await res;
    const rc = await cl.wait();
    expect(close.code === 1001, `server saw ${close.code}, want 1001`);
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
  });

  await check('client: message over --max-message -> 1009, exit 4', async () => {
    const res = on('/toobig', async (ws) => {
      ws.send('x'.repeat(1000));
      ws.send('x'.repeat(2000));
      return ws.closed;
    });
    const cl = new Client(url('/toobig'), '--max-message', '1K');
    const close = await res;
    const rc = await cl.wait();
    expect(close.code === 1009, `server saw ${close.code}, want 1009`);
    expect(cl.out.toString() === 'x'.repeat(1000) + '\n', `stdout ${cl.out.length} bytes`);
    expect(rc === 4, `exit ${rc}, want 4: ${cl.err}`);
  });

  for (const [name, bytes, want] of [
    ['reserved opcode', frame(3, 'x'), 1002],
    ['masked frame', frame(1, 'x', { mask: true }), 1002],
    ['RSV3 set', frame(2, 'x', { rsv: 1 }), 1002],
    ['ping over 125 bytes', frame(9, Buffer.alloc(126)), 1002],
    ['invalid UTF-8', frame(1, Buffer.from([0xf8, 0x88, 0x80, 0x80, 0x80])), 1007],
  ]) {
    await check(`client: ${name} from server -> ${want}`, async () => {
      const res = on(`/bad-${want}-${name.replace(/ /g, '-')}`, async (ws) => {
        ws._socket.write(bytes);
        return ws.closed;
      });
      const cl = new Client(url(`/bad-${want}-${name.replace(/ /g, '-')}`));
      const close = await res;
      const rc = await cl.wait();
      expect(close.code === want, `client sent ${close.code}, want ${want}`);
      expect(rc === 3 || rc === 4, `exit ${rc}, want 3 or 4: ${cl.err}`);
    });
  }

  await check('client: handshake refused (401) -> exit 1', async () => {
    const cl = new Client(url('/forbidden'));
    const rc = await cl.wait();
    expect(rc === 1, `exit ${rc}, want 1: ${cl.err}`);
    expect(cl.err !== '', 'no error printed');
  });

  await check('client --ping-interval: pings answered keep it open', async () => {
    const res = on('/keepalive', async (ws) => {
      let pings = 0;
      ws.on('ping', () => pings++);
      await sleep(1800);
      ws.send('still here');
      await ws.next();
      return pings;
    });
    const cl = new Client(url('/keepalive'), '--ping-interval', '0.3');
    cl.child.stdout.once('data', () => cl.write('bye\n').then(() => cl.closeStdin()));
    const pings = await res;
    const rc = await cl.wait();
    expect(pings >= 2, `server saw ${pings} pings in 1.8 s`);
    expect(rc === 0, `exit ${rc}: ${cl.err}`);
  });

  for (const c of wss.clients) c.terminate();
  await new Promise((r) => wss.close(r));
}

// ---- permessage-deflate (RFC 7692) ---------------------------------------------

function deflateMsgs() {
  const js = Array.from({ length: 4000 }, (_, i) => `{"id": ${i}, "channel": "news"}, `).join('');
  return [['hi', false], ['h\u00e9llo \u{1F600}'.repeat(20), false], [js, false],
    [Buffer.alloc(100, 1), true], [Buffer.alloc(300000), true],
    [crypto.randomBytes(70000), true], ['', false], [Buffer.alloc(0), true]];
}

const PAYLOAD = deflateMsgs().reduce((n, [d]) => n + Buffer.byteLength(d), 0);

async function deflateChecks() {
  const echo = await startEcho();
  const plain = await startEcho('--no-deflate');
  const roundtrips = async (ws) => {
    for (const [data, isBinary] of deflateMsgs()) {
      ws.send(data, { binary: isBinary });
      const got = await ws.next();
      expect(sameMessage(got, data, isBinary), `echo of ${isBinary ? 'binary' : 'text'} ${data.length}`);
    }
  };
  for (const [name, pmd] of [
    ['defaults', true],
    ['no_context_takeover both ways, windows 10/10',
      { serverNoContextTakeover: true, clientNoContextTakeover: true,
        serverMaxWindowBits: 10, clientMaxWindowBits: 10 }],
    ['windows 9/9', { serverMaxWindowBits: 9, clientMaxWindowBits: 9 }],
  ]) {
    await check(`deflate: node->echo ${name}: negotiated, 8 messages round-trip compressed`, async () => {
      const ws = await connect(echo.url, { perMessageDeflate: pmd });
      expect(/permessage-deflate/.test(ws.extensions), `extensions '${ws.extensions}'`);
      await roundtrips(ws);
      // Far fewer bytes came in than the payloads: herald compressed them.
      const read = ws._socket.bytesRead;
      expect(read < PAYLOAD / 2, `read ${read} bytes for ${PAYLOAD} of payload`);
      ws.close(1000);
      await ws.closed;
      return `herald answered '${ws.extensions}', ${read} bytes read for ${PAYLOAD}`;
    });
  }
  await check('deflate: echo --no-deflate declines the offer', async () => {
    const ws = await connect(plain.url, { perMessageDeflate: true });
    expect(ws.extensions === '', `extensions '${ws.extensions}'`);
    ws.send('x'.repeat(1000));
    expect(sameMessage(await ws.next(), 'x'.repeat(1000), false), 'echo');
    ws.close(1000);
    await ws.closed;
  });

  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 64 << 20, perMessageDeflate: true });
  await new Promise((r) => wss.once('listening', r));
  const url = `ws://127.0.0.1:${wss.address().port}/`;
  for (const [args, want] of [[['--deflate'], true], [[], false]]) {
    await check(`deflate: client --echo ${args.join(' ') || '(no --deflate)'} <- node server: ${want ? 'negotiated, round-trip compressed' : 'nothing offered'}`, async () => {
      const res = new Promise((resolve, reject) => {
        wss.once('connection', (ws, req) => {
          attachQueue(ws);
          (async () => {
            const offer = req.headers['sec-websocket-extensions'];
            const agreed = Object.keys(ws._extensions || {});
            await roundtrips(ws);
            const read = ws._socket.bytesRead;
            ws.close(1000);
            await ws.closed;
            return { offer, agreed, read };
          })().then(resolve, reject);
        });
      });
      const cl = new Client(url, '--echo', ...args);
      const { offer, agreed, read } = await res;
      const rc = await cl.wait();
      expect(rc === 0, `exit ${rc}: ${cl.err}`);
      if (want) {
        expect(agreed.includes('permessage-deflate'), `offer '${offer}', agreed ${agreed}`);
        expect(read < PAYLOAD / 2, `read ${read} bytes for ${PAYLOAD} of payload`);
      } else {
        expect(offer === undefined && agreed.length === 0, `offer '${offer}'`);
      }
      return `herald offered '${offer}', ${read} bytes read`;
    });
  }
  wss.close();
  for (const e of [echo, plain]) {
    const rc = await stopChild(e.child);
    expect(rc === 0, `echo exit ${rc}`);
  }
}

async function main() {
  if (process.argv.length !== 3) {
    console.error('usage: run_node.mjs HERALD_BINARY');
    process.exit(2);
  }
  HERALD = path.resolve(process.argv[2]);
  const { version } = require('ws/package.json');
  console.log(`node ${process.version}, ws ${version}, herald ${HERALD}`);
  const overall = setTimeout(() => {
    report('run', false, 'overall timeout');
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(1);
  }, 600000);
  try {
    await clientVsEcho();
    await serverVsClient();
    await deflateChecks();
  } catch (e) {
    report('run', false, e.stack);
  }
  clearTimeout(overall);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
