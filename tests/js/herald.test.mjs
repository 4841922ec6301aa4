// herald.test.mjs - web/herald.js in Node.js, with the `ws` package,
// against a real `herald serve` on 127.0.0.1 (node:test).
//
//   node --test tests/js/herald.test.mjs    (HERALD=path/to/herald)
//
// Covers: a clear error when there is no WebSocket implementation (it does
// not loop "connecting"); connect, subscribe, publish, presence and history
// over `ws`; getToken before every attempt and again after the server
// expires a token (3006); a failing getToken reported and retried; a
// subscription getToken; the refresh and sub_refresh pushes answered without
// reconnecting, and a failing refresh ending in 3006 and a reconnect; SSE
// mode with one EventSource for every subscription (eventsource.mjs); and
// the TypeScript declarations under tsc --strict.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { createHmac } from "node:crypto";
import { writeFileSync, mkdtempSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { TestEventSource } from "./eventsource.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const require = createRequire(import.meta.url);
const WS = require("ws");
const HERALD = process.env.HERALD || path.join(root, "build/herald");
const SECRET = "tests-js-secret-0123456789abcdef0123456789";

const servers = [];
// Every client a test made: disconnected at the end, so that a test that
// failed half-way leaves no reconnecting client to keep the process alive.
const heralds = [];
after(() => {
  for (const h of heralds) {
    try {
      h.disconnect();
    } catch (e) {
      /* already gone */
    }
  }
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
  const mod = require(file);
  class Herald extends mod.Herald {
    constructor(...args) {
      super(...args);
      heralds.push(this);
    }
  }
  return { ...mod, Herald };
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

// A config file in a fresh directory; returns its path.
function configFile(obj) {
  const dir = mkdtempSync(path.join(tmpdir(), "herald-js-"));
  const file = path.join(dir, "herald.json");
  writeFileSync(file, JSON.stringify(obj));
  return file;
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

test("without a WebSocket implementation connect() throws a clear error", { timeout: 60000 }, () => {
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

test("over ws: connect, subscribe, publish, presence, history", { timeout: 60000 }, async () => {
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

test("the ws package is found by itself when it can be required", { timeout: 60000 }, async () => {
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

test("getToken: called per attempt, and again after the token expires (3006)", { timeout: 60000 }, async () => {
  // refresh_ahead 0: the server sends no refresh push, so the token's exp
  // ends the connection (with the default 30 s the client would refresh).
  const url = await serve(
    "--config",
    configFile({ anonymous: false, jwt: { hmac_secret: SECRET }, refresh_ahead: 0 })
  );
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

test("getToken that fails is reported and retried, not stuck", { timeout: 60000 }, async () => {
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

test("a subscription's getToken gives the token of a private channel", { timeout: 60000 }, async () => {
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

const now = () => Math.floor(Date.now() / 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Tokens of 3 s and the refresh push 2 s ahead of exp: a refresh about
// every second.
const REFRESH_CONFIG = {
  anonymous: false,
  jwt: { hmac_secret: SECRET },
  refresh_ahead: 2,
  namespaces: [
    { name: "room", publish: true, history_size: 10, history_ttl: 60 },
    { name: "secret", private: true, publish: true, history_size: 10, history_ttl: 60 },
  ],
};

test("refresh push: the connection outlives several token exps without reconnecting", { timeout: 60000 }, async () => {
  const url = await serve("--config", configFile(REFRESH_CONFIG));
  const { Herald } = loadHerald();
  let calls = 0;
  const h = new Herald(url, {
    WebSocket: WS,
    minDelay: 50,
    maxDelay: 200,
    getToken: () => {
      calls++;
      return jwt({ sub: "dee", exp: now() + 3 });
    },
  });
  const events = [];
  for (const name of ["connected", "disconnected", "error", "refreshed"]) {
    h.on(name, (ev) => events.push([name, ev]));
  }
  const got = [];
  h.subscribe("room:a", { onPublication: (pub) => got.push(pub.data) });
  const connected = waitFor(h, "connected");
  h.connect();
  const c = await connected;
  const client = c.client;
  await sleep(8000); // well past the exp of the first two tokens
  const names = events.map((e) => e[0]);
  assert.deepEqual(names.filter((n) => n !== "refreshed"), ["connected"], JSON.stringify(events));
  const refreshed = events.filter((e) => e[0] === "refreshed");
  assert.ok(refreshed.length >= 3, `refreshed ${refreshed.length} times`);
  for (const [, ev] of refreshed) {
    assert.equal(ev.channel, null);
    assert.equal(ev.result.expires, true);
  }
  // One getToken per connect and per refresh; the last one may still be
  // under way (its refresh command not answered yet) when we count.
  const pending = calls - (refreshed.length + 1);
  assert.ok(pending === 0 || pending === 1, `getToken ${calls} times, refreshed ${refreshed.length}`);
  assert.equal(h.state, "connected");
  assert.equal(h.clientId, client, "the same connection throughout");
  await h.publish("room:a", { n: 1 });
  for (let i = 0; i < 50 && got.length < 1; i++) await sleep(50);
  assert.deepEqual(got, [{ n: 1 }], "the subscription lives on");
  h.disconnect();
});

test("sub_refresh push: a subscription token is replaced, the subscription lives on", { timeout: 60000 }, async () => {
  const url = await serve("--config", configFile(REFRESH_CONFIG));
  const { Herald } = loadHerald();
  const asked = [];
  const h = new Herald(url, {
    WebSocket: WS,
    getToken: () => jwt({ sub: "eve", exp: now() + 3600 }),
  });
  const events = [];
  for (const name of ["connected", "disconnected", "error", "refreshed"]) {
    h.on(name, (ev) => events.push([name, ev]));
  }
  const got = [];
  const errors = [];
  const subscribed = new Promise((resolve) => {
    h.subscribe(
      "secret:vault",
      {
        onSubscribed: resolve,
        onPublication: (pub) => got.push(pub.data),
        onError: (e) => errors.push(e),
      },
      {
        getToken: (channel) => {
          asked.push(channel);
          return jwt({ sub: "eve", channel, exp: now() + 3 });
        },
      }
    );
  });
  h.connect();
  await subscribed;
  await sleep(7000); // past the exp of the first two subscription tokens
  const refreshed = events.filter((e) => e[0] === "refreshed");
  assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times: ${JSON.stringify(events)}`);
  for (const [, ev] of refreshed) {
    assert.equal(ev.channel, "secret:vault");
    assert.equal(ev.result.expires, true);
  }
  const pending = asked.length - (refreshed.length + 1); // one may be under way
  assert.ok(pending === 0 || pending === 1, `asked ${asked.length}, refreshed ${refreshed.length}`);
  assert.ok(asked.every((c) => c === "secret:vault"));
  assert.deepEqual(errors, []);
  assert.deepEqual(events.map((e) => e[0]).filter((n) => n !== "refreshed"), ["connected"]);
  // Still subscribed on the server: a publication arrives.
  await h.publish("secret:vault", { k: 1 });
  for (let i = 0; i < 50 && got.length < 1; i++) await sleep(50);
  assert.deepEqual(got, [{ k: 1 }]);
  h.disconnect();
});

test("refresh push with a failing getToken: error, then 3006, then a reconnect with a fresh token", { timeout: 60000 }, async () => {
  const url = await serve("--config", configFile(REFRESH_CONFIG));
  const { Herald } = loadHerald();
  let calls = 0;
  const h = new Herald(url, {
    WebSocket: WS,
    minDelay: 50,
    maxDelay: 200,
    getToken: () => {
      calls++;
      if (calls === 2) {
        return Promise.reject(new Error("token service down"));
      }
      return jwt({ sub: "fay", exp: now() + (calls === 1 ? 3 : 3600) });
    },
  });
  const events = [];
  for (const name of ["connected", "disconnected", "error", "refreshed"]) {
    h.on(name, (ev) => events.push([name, ev]));
  }
  const got = [];
  h.subscribe("room:b", { onPublication: (pub) => got.push(pub.data) });
  h.connect();
  await waitFor(h, "connected");
  await waitFor(h, "connected", () => true, 8000); // the second connection
  const names = events.map((e) => e[0]);
  assert.deepEqual(names, ["connected", "error", "disconnected", "connected"], JSON.stringify(events));
  const err = events[1][1].error;
  assert.equal(err.code, 2);
  assert.match(err.message, /token service down/);
  const gone = events[2][1];
  assert.equal(gone.code, 3006);
  assert.equal(gone.reconnect, true);
  assert.equal(calls, 3, "connect, the failed refresh, the reconnect");
  await h.publish("room:b", { n: 2 });
  for (let i = 0; i < 50 && got.length < 1; i++) await sleep(50);
  assert.deepEqual(got, [{ n: 2 }], "resubscribed after the reconnect");
  h.disconnect();
});

const API_KEY = "tests-js-api-key-0123456789abcdef01234567";

// Publishes over the HTTP API of the server at ws url; resolves {epoch, offset}.
async function apiPublish(url, channel, data) {
  const base = url.replace(/^ws/, "http").replace(/\/connection\/websocket$/, "");
  const res = await fetch(`${base}/api/publish`, {
    method: "POST",
    headers: { Authorization: `apikey ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ channel, data }),
  });
  const js = await res.json();
  assert.equal(res.status, 200, JSON.stringify(js));
  return js.result;
}

async function until(pred, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}`);
    await sleep(20);
  }
}

const SSE_CONFIG = {
  api_key: API_KEY,
  namespaces: [
    { name: "feed", history_size: 100, history_ttl: 300 },
    { name: "small", history_size: 3, history_ttl: 300 },
  ],
};

// A subscription that records what it is given.
function recorder(h, channel) {
  const r = { pubs: [], unrecovered: [], subscribed: 0 };
  r.sub = h.subscribe(channel, {
    onPublication: (pub) => r.pubs.push(pub.data),
    onUnrecovered: (res) => r.unrecovered.push(res),
    onSubscribed: () => r.subscribed++,
  });
  return r;
}

function channelsOf(es) {
  return new URL(es.url).searchParams.getAll("channel");
}

test("SSE: one EventSource for every subscription, reopened when the set changes", { timeout: 60000 }, async () => {
  const url = await serve("--config", configFile(SSE_CONFIG));
  const { Herald } = loadHerald();
  TestEventSource.instances = [];
  const h = new Herald(url, { sse: "force", EventSource: TestEventSource, minDelay: 50, maxDelay: 200 });
  const one = recorder(h, "feed:one");
  const two = recorder(h, "feed:two");
  const connected = waitFor(h, "connected");
  h.connect();
  assert.equal((await connected).transport, "sse");
  assert.equal(TestEventSource.instances.length, 1, "one stream");
  const first = TestEventSource.instances[0];
  assert.deepEqual(channelsOf(first), ["feed:one", "feed:two"]);
  await apiPublish(url, "feed:one", { n: 1 });
  await apiPublish(url, "feed:two", { n: 1 });
  await until(() => one.pubs.length === 1 && two.pubs.length === 1, "the first publications");
  assert.deepEqual([one.subscribed, two.subscribed], [1, 1]);

  // A third subscription: one new stream for the three, resuming the two.
  const three = recorder(h, "feed:three");
  await until(() => TestEventSource.instances.length === 2, "a new stream");
  const second = TestEventSource.instances[1];
  assert.equal(first.readyState, 2, "the old stream is closed");
  assert.deepEqual(channelsOf(second), ["feed:one", "feed:two", "feed:three"]);
  const since = new URL(second.url).searchParams.get("last_event_id");
  assert.match(since, /^feed:one@[a-z0-9]+:1;feed:two@[a-z0-9]+:1$/);
  await until(() => three.subscribed === 1, "the third subscribed");
  // Published on the first two while the stream was being replaced.
  await apiPublish(url, "feed:one", { n: 2 });
  await apiPublish(url, "feed:three", { n: 1 });
  await apiPublish(url, "feed:two", { n: 2 });
  await until(
    () => one.pubs.length === 2 && two.pubs.length === 2 && three.pubs.length === 1,
    "publications on the new stream"
  );
  assert.deepEqual([one.subscribed, two.subscribed], [1, 1], "no second onSubscribed");

  // Two unsubscribed at once, then one more subscribe: one stream for that.
  two.sub.unsubscribe();
  three.sub.unsubscribe();
  const four = recorder(h, "feed:four");
  await until(() => TestEventSource.instances.length === 3, "a stream for the new set");
  await sleep(100);
  assert.equal(TestEventSource.instances.length, 3, "one reopen for three changes");
  assert.deepEqual(channelsOf(TestEventSource.instances[2]), ["feed:one", "feed:four"]);
  await until(() => four.subscribed === 1, "the fourth subscribed");
  await apiPublish(url, "feed:one", { n: 3 });
  await apiPublish(url, "feed:two", { n: 3 });
  await apiPublish(url, "feed:four", { n: 1 });
  await until(() => one.pubs.length === 3 && four.pubs.length === 1, "after the reopen");
  await sleep(100);
  assert.deepEqual(one.pubs, [{ n: 1 }, { n: 2 }, { n: 3 }], "each once, in order");
  assert.equal(two.pubs.length, 2, "nothing after unsubscribe");
  assert.deepEqual([one.unrecovered, two.unrecovered, three.unrecovered, four.unrecovered].flat(), []);
  h.disconnect();
  assert.equal(TestEventSource.instances[2].readyState, 2);
});

test("SSE: a dropped stream resumes every channel; unrecovered only where history is gone", { timeout: 60000 }, async () => {
  const url = await serve("--config", configFile(SSE_CONFIG));
  const { Herald } = loadHerald();
  TestEventSource.instances = [];
  const h = new Herald(url, { sse: "force", EventSource: TestEventSource, minDelay: 50, maxDelay: 200 });
  const big = recorder(h, "feed:r1");
  const small = recorder(h, "small:r2");
  const connected = waitFor(h, "connected");
  h.connect();
  await connected;
  await apiPublish(url, "feed:r1", { i: 1 });
  await apiPublish(url, "small:r2", { i: 1 });
  await until(() => big.pubs.length === 1 && small.pubs.length === 1, "the first publications");
  const es = TestEventSource.instances[0];
  const lastId = es.lastEventId;
  const states = [];
  h.on("state", (s) => states.push(s.state));
  es.drop(); // a network failure: the EventSource reconnects by itself
  await apiPublish(url, "feed:r1", { i: 2 });
  await apiPublish(url, "feed:r1", { i: 3 });
  let pos;
  for (let i = 2; i <= 6; i++) pos = await apiPublish(url, "small:r2", { i }); // history 3
  await until(() => big.pubs.length === 3 && small.unrecovered.length === 1, "recovery");
  assert.equal(TestEventSource.instances.length, 1, "the same EventSource reconnected");
  assert.equal(es.requests[1], lastId, "with Last-Event-ID: every channel's position");
  assert.deepEqual(big.pubs, [{ i: 1 }, { i: 2 }, { i: 3 }], "feed:r1 recovered what it missed");
  assert.equal(big.unrecovered.length, 0, "feed:r1 is not unrecovered");
  assert.equal(small.unrecovered[0].recovered, false);
  assert.equal(small.unrecovered[0].offset, pos.offset, "small:r2 told its present");
  assert.equal(small.sub.offset, pos.offset);
  assert.deepEqual(states, ["connecting", "connected"]);
  await apiPublish(url, "small:r2", { i: 7 });
  await until(() => small.pubs.length === 2, "small:r2 live again");
  assert.deepEqual(small.pubs, [{ i: 1 }, { i: 7 }]);
  h.disconnect();
});

test("SSE: a stream ended by its token's exp starts again with a fresh token", { timeout: 60000 }, async () => {
  const url = await serve(
    "--config",
    configFile({ ...SSE_CONFIG, anonymous: false, jwt: { hmac_secret: SECRET } })
  );
  const { Herald } = loadHerald();
  TestEventSource.instances = [];
  let calls = 0;
  const h = new Herald(url, {
    sse: "force",
    EventSource: TestEventSource,
    minDelay: 50,
    maxDelay: 200,
    getToken: () => {
      calls++;
      return jwt({ sub: "gil", exp: now() + (calls === 1 ? 2 : 3600) });
    },
  });
  const a = recorder(h, "feed:t1");
  const b = recorder(h, "feed:t2");
  const connected = waitFor(h, "connected");
  h.connect();
  await connected;
  await apiPublish(url, "feed:t1", { i: 1 });
  await until(() => a.pubs.length === 1, "the first publication");
  // The server ends the stream at exp; the EventSource's own retry carries
  // the expired token (401), so herald.js starts again with a new one.
  const disconnected = [];
  h.on("disconnected", (d) => disconnected.push(d));
  await until(() => TestEventSource.instances.length === 2, "a new stream", 8000);
  assert.equal(TestEventSource.instances[0].status, 401);
  assert.equal(calls, 2);
  await until(() => h.state === "connected", "connected again");
  await apiPublish(url, "feed:t2", { i: 1 });
  await apiPublish(url, "feed:t1", { i: 2 });
  await until(() => a.pubs.length === 2 && b.pubs.length === 1, "publications on the new stream");
  assert.deepEqual(a.pubs, [{ i: 1 }, { i: 2 }]);
  assert.deepEqual(disconnected, [], "no disconnected event: it carried on");
  h.disconnect();
});

test("SSE: a set of channels over max_sse_channels is refused: disconnected", { timeout: 60000 }, async () => {
  const url = await serve("--config", configFile({ ...SSE_CONFIG, max_sse_channels: 2 }));
  const { Herald } = loadHerald();
  TestEventSource.instances = [];
  const h = new Herald(url, { sse: "force", EventSource: TestEventSource });
  for (const c of ["feed:a", "feed:b", "feed:c"]) h.subscribe(c, {});
  const gone = waitFor(h, "disconnected");
  h.connect();
  const ev = await gone;
  assert.equal(ev.reconnect, false);
  assert.equal(ev.reason, "SSE stream refused");
  assert.equal(TestEventSource.instances[0].status, 400);
  assert.equal(h.state, "disconnected");
});

async function apiCall(url, what, body) {
  const base = url.replace(/^ws/, "http").replace(/\/connection\/websocket$/, "");
  const res = await fetch(`${base}/api/${what}`, {
    method: "POST",
    headers: { Authorization: `apikey ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const js = await res.json();
  assert.equal(res.status, 200, JSON.stringify(js));
  return js.result;
}

test("server-side subscriptions: subscribed, publication and unsubscribed events", { timeout: 60000 }, async () => {
  const url = await serve("--config", configFile({ ...REFRESH_CONFIG, api_key: API_KEY }));
  const { Herald } = loadHerald();
  const h = new Herald(url, {
    WebSocket: WS,
    getToken: () => jwt({ sub: "fay", exp: now() + 3600, subs: ["room:srv"] }),
  });
  const events = [];
  for (const name of ["subscribed", "publication", "unsubscribed", "disconnected"]) {
    h.on(name, (ev) => events.push([name, ev]));
  }
  const subscribed = waitFor(h, "subscribed");
  h.connect();
  const ev = await subscribed;
  assert.equal(ev.channel, "room:srv");
  assert.equal(typeof ev.epoch, "string");
  // Listening before publishing: on two loops the push may reach the
  // client before the HTTP reply reaches the publisher.
  const published = waitFor(h, "publication");
  const pos = await apiPublish(url, "room:srv", { n: 1 });
  const got = await published;
  assert.deepEqual([got.channel, got.pub.data, got.pub.offset], ["room:srv", { n: 1 }, pos.offset]);
  // The application's own subscription of another channel is not touched.
  const mine = [];
  await new Promise((resolve) => h.subscribe("room:mine", { onSubscribed: resolve, onPublication: (p) => mine.push(p.data) }));
  await apiPublish(url, "room:mine", { m: 1 });
  await until(() => mine.length === 1, "own subscription's publication");
  assert.ok(!events.some(([n, e]) => n === "publication" && e.channel === "room:mine"), JSON.stringify(events));
  const gone = waitFor(h, "unsubscribed");
  await apiCall(url, "unsubscribe", { user: "fay", channel: "room:srv" });
  const un = await gone;
  assert.equal(un.channel, "room:srv");
  await apiPublish(url, "room:srv", { n: 2 });
  await apiPublish(url, "room:mine", { m: 2 });
  await until(() => mine.length === 2, "own subscription lives on");
  assert.equal(events.filter(([n]) => n === "publication").length, 1, JSON.stringify(events));
  assert.equal(h.state, "connected");
  h.disconnect();
});

test("a subscription token that expires: onUnsubscribed, dropped, subscribe() again", { timeout: 60000 }, async () => {
  const url = await serve("--config", configFile({ ...REFRESH_CONFIG, api_key: API_KEY }));
  const { Herald } = loadHerald();
  const h = new Herald(url, { WebSocket: WS, getToken: () => jwt({ sub: "gus", exp: now() + 3600 }) });
  const ended = [];
  const gone = waitFor(h, "unsubscribed");
  const first = new Promise((resolve) =>
    h.subscribe(
      "secret:short",
      { onSubscribed: resolve, onUnsubscribed: (e) => ended.push(e) },
      { token: jwt({ sub: "gus", channel: "secret:short", exp: now() + 2 }) }
    )
  );
  h.connect();
  await first;
  const un = await gone;
  assert.equal(un.channel, "secret:short");
  assert.equal(ended.length, 1);
  assert.equal(typeof ended[0].reason, "string");
  assert.equal(h.getSubscription("secret:short"), undefined, "dropped from the client");
  assert.equal(h.state, "connected", "the connection stays");
  const got = [];
  await new Promise((resolve) =>
    h.subscribe(
      "secret:short",
      { onSubscribed: resolve, onPublication: (p) => got.push(p.data) },
      { token: jwt({ sub: "gus", channel: "secret:short", exp: now() + 3600 }) }
    )
  );
  await apiPublish(url, "secret:short", { s: 1 });
  await until(() => got.length === 1, "publication after subscribing again");
  h.disconnect();
});

test("herald.d.ts type-checks a typical program (tsc --strict)", { timeout: 60000 }, () => {
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
