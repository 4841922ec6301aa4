// herald.test.mjs - web/herald.js in Node.js, with the `ws` package,
// against a real `herald serve` on 127.0.0.1 (node:test).
//
//   node --test tests/js/herald.test.mjs    (HERALD=path/to/herald)
//
// Covers: a clear error when there is no WebSocket implementation (it does
// not loop "connecting"); connect, subscribe, publish, presence and history
// over `ws`; getToken before every attempt and again after the server
// expires a token (3006); a failing getToken reported and retried; a
// subscription getToken; and the TypeScript declarations under tsc --strict.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { createHmac } from "node:crypto";
import { writeFileSync, mkdtempSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const require = createRequire(import.meta.url);
const WS = require("ws");
const HERALD = process.env.HERALD || path.join(root, "build/herald");
const SECRET = "tests-js-secret-0123456789abcdef0123456789";

const servers = [];
after(() => {
  for (const s of servers) s.kill("SIGTERM");
});

// Starts `herald serve ARGS` on a free port; resolves with its ws URL.
function serve(...args) {
  return new Promise((resolve, reject) => {
    const p = spawn(HERALD, ["serve", "--listen", "127.0.0.1:0", ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    servers.push(p);
    let out = "";
    const timer = setTimeout(() => reject(new Error("no listening line: " + out)), 10000);
    const onData = (d) => {
      out += d;
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(`ws://127.0.0.1:${m[1]}/connection/websocket`);
      }
    };
    p.stdout.on("data", onData);
    p.stderr.on("data", onData);
    p.on("exit", (code) => reject(new Error(`herald serve exited ${code}: ${out}`)));
  });
}

// A fresh copy of herald.js (it reads the globals when a client is made).
function loadHerald() {
  const file = require.resolve(path.join(root, "web/herald.js"));
  delete require.cache[file];
  return require(file);
}

function b64url(x) {
  return Buffer.from(x).toString("base64url");
}

function jwt(claims) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

function waitFor(herald, name, pred = () => true, ms = 8000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${name} event within ${ms} ms`));
    }, ms);
    const off = herald.on(name, (ev) => {
      if (pred(ev)) {
        clearTimeout(timer);
        off();
        resolve(ev);
      }
    });
  });
}

test("without a WebSocket implementation connect() throws a clear error", () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket; // as on Node 20; herald.js sits where no ws is installed
  try {
    const { Herald } = loadHerald();
    const h = new Herald("ws://127.0.0.1:9/connection/websocket");
    assert.throws(() => h.connect(), /no WebSocket implementation.*npm install ws/s);
    assert.equal(h.state, "disconnected", "it does not sit in connecting");
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test("over ws: connect, subscribe, publish, presence, history", async () => {
  const url = await serve("--demo");
  const { Herald } = loadHerald();
  const h = new Herald(url, { WebSocket: WS, name: "node" });
  const got = [];
  const received = new Promise((resolve) => {
    h.subscribe("chat:js", {
      onPublication(pub) {
        got.push(pub);
        if (got.length === 2) resolve();
      },
    });
  });
  const connected = waitFor(h, "connected");
  h.connect();
  const info = await connected;
  assert.equal(info.transport, "websocket");
  const pos = await h.publish("chat:js", { text: "one" });
  assert.equal(typeof pos.epoch, "string");
  await h.publish("chat:js", { text: "two" });
  await received;
  assert.deepEqual(got.map((p) => p.data.text), ["one", "two"]);
  const { clients } = await h.presence("chat:js");
  assert.equal(Object.keys(clients).length, 1);
  const hist = await h.history("chat:js", { limit: 10 });
  assert.equal(hist.publications.length, 2);
  await assert.rejects(h.publish("ticker:x", {}), (e) => e.code === 103);
  h.disconnect();
});

test("the ws package is found by itself when it can be required", async () => {
  // herald.js looks for `ws` from its own directory; a copy beside this
  // test (where `ws` is installed) finds it.
  const dir = mkdtempSync(path.join(here, "node_modules", ".herald-"));
  const copy = path.join(dir, "herald.js");
  writeFileSync(copy, require("node:fs").readFileSync(path.join(root, "web/herald.js")));
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    const { Herald } = require(copy);
    const url = await serve();
    const h = new Herald(url);
    const connected = waitFor(h, "connected");
    h.connect();
    await connected;
    h.disconnect();
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test("getToken: called per attempt, and again after the token expires (3006)", async () => {
  const url = await serve("--no-anonymous", "--jwt-hmac", SECRET);
  const { Herald } = loadHerald();
  let calls = 0;
  const h = new Herald(url, {
    WebSocket: WS,
    minDelay: 50,
    maxDelay: 200,
    getToken: async () => {
      calls++;
      // The first token lasts 2 s; the server ends the connection then.
      const ttl = calls === 1 ? 2 : 3600;
      return jwt({ sub: "ann", exp: Math.floor(Date.now() / 1000) + ttl });
    },
  });
  const first = waitFor(h, "connected");
  h.connect();
  const c1 = await first;
  assert.equal(c1.user, "ann");
  const gone = await waitFor(h, "disconnected", () => true, 6000);
  assert.equal(gone.code, 3006);
  assert.equal(gone.reconnect, true);
  await waitFor(h, "connected");
  assert.equal(calls, 2, "a fresh token for the second connection");
  h.disconnect();
});

test("getToken that fails is reported and retried, not stuck", async () => {
  const url = await serve("--no-anonymous", "--jwt-hmac", SECRET);
  const { Herald } = loadHerald();
  let calls = 0;
  const h = new Herald(url, {
    WebSocket: WS,
    minDelay: 50,
    maxDelay: 100,
    getToken: () => {
      calls++;
      if (calls === 1) throw new Error("backend down");
      return jwt({ sub: "bob", exp: Math.floor(Date.now() / 1000) + 60 });
    },
  });
  const err = waitFor(h, "error");
  const connected = waitFor(h, "connected");
  h.connect();
  const e = await err;
  assert.equal(e.error.code, 2);
  assert.match(e.error.message, /backend down/);
  await connected;
  assert.equal(calls, 2);
  h.disconnect();
});

test("a subscription's getToken gives the token of a private channel", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "herald-js-"));
  const config = path.join(dir, "herald.json");
  writeFileSync(
    config,
    JSON.stringify({
      anonymous: false,
      jwt: { hmac_secret: SECRET },
      namespaces: [{ name: "secret", private: true, history_size: 10, history_ttl: 60 }],
    })
  );
  const url = await serve("--config", config);
  const { Herald } = loadHerald();
  const asked = [];
  const h = new Herald(url, {
    WebSocket: WS,
    getToken: () => jwt({ sub: "cy", exp: Math.floor(Date.now() / 1000) + 60 }),
  });
  const subscribed = new Promise((resolve, reject) => {
    h.subscribe(
      "secret:room",
      { onSubscribed: resolve, onError: reject },
      {
        getToken: async (channel) => {
          asked.push(channel);
          return jwt({
            sub: "cy",
            channel,
            exp: Math.floor(Date.now() / 1000) + 60,
          });
        },
      }
    );
  });
  h.connect();
  await subscribed;
  assert.deepEqual(asked, ["secret:room"]);
  h.disconnect();
});

test("herald.d.ts type-checks a typical program (tsc --strict)", () => {
  const tsc = path.join(here, "node_modules/typescript/bin/tsc");
  if (!existsSync(tsc)) {
    throw new Error("typescript is not installed in tests/js (npm install)");
  }
  execFileSync(process.execPath, [tsc, "--strict", "--noEmit", "--lib", "es2020,dom", path.join(here, "types.ts")], {
    stdio: "pipe",
  });
  // And a wrong use is caught.
  const bad = path.join(here, "node_modules", ".bad-types.ts");
  writeFileSync(
    bad,
    'import { Herald } from "../../../web/herald";\n' +
      'const h = new Herald("/x", { pingInterval: "often" });\n'
  );
  assert.throws(() =>
    execFileSync(process.execPath, [tsc, "--strict", "--noEmit", "--lib", "es2020,dom", bad], { stdio: "pipe" })
  );
});
