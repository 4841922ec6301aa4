// node.test.mjs - Pusher Channels compatibility of `herald serve`, judged by
// the real npm packages, unmodified: pusher-js (its Node build) as the
// client, the `pusher` server SDK to trigger, query and authorize.
//
//   node node.test.mjs /path/to/herald            one node, memory engine
//   node node.test.mjs /path/to/herald --redis    two nodes over Redis: the
//       clients of each test are spread over both nodes, and API calls go
//       to either
//
// With HERALD_THREADS=N each node runs on N loops (--threads N): the kernel
// spreads the connections over them, and the "across loops" tests place
// the connections they compare on different loops (a socket id's number
// modulo N is its loop: herald numbers a node's clients that way).
//
// Exit status: 0 passed, 1 a check failed, 77 skipped (a "SKIPPED:" line
// says why).

import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import Pusher from "pusher-js";
import PusherServer from "pusher";
import WebSocket from "ws";
import {
  APP, HERALD_API_KEY, LIMIT_APP, QUIET_APP, QUOTA_APP, SIGNIN_APP, check, cleanup, signedRequest, sdkFor, sleep, startAuthServer,
  startHerald, startRedis, startWebhookReceiver, step, stopHerald, summary, until,
} from "./lib.mjs";

const binary = process.argv[2];
const redisMode = process.argv.includes("--redis");
if (!binary || !fs.existsSync(binary)) {
  console.error(`usage: node node.test.mjs /path/to/herald [--redis]`);
  process.exit(1);
}
setTimeout(() => {
  console.log("FAIL - the whole test took longer than 240 s");
  cleanup();
  process.exit(1);
}, 240_000).unref();

const hooks = await startWebhookReceiver();
let nodes;
if (redisMode) {
  const redis = await startRedis();
  if (!redis) {
    console.log("SKIPPED: redis-server is not installed");
    process.exit(77);
  }
  nodes = [await startHerald(binary, { name: "a", redisPort: redis.port, webhookUrl: hooks.url }),
    await startHerald(binary, { name: "b", redisPort: redis.port, webhookUrl: hooks.url })];
} else {
  const n = await startHerald(binary, { name: "a", webhookUrl: hooks.url });
  nodes = [n, n];
}
const [A, B] = nodes;
console.log(`# ${redisMode ? "two nodes over Redis" : "one node"}: ${nodes.map((n) => n.url).join(" ")}`);
const auth = await startAuthServer(PusherServer);
const sdkA = sdkFor(PusherServer, A);
const sdkB = sdkFor(PusherServer, B);

const clients = [];
/* A pusher-js client on node, as user (for the auth endpoint). */
function client(node, { user = "anon", app = APP, extra = {} } = {}) {
  const p = new Pusher(app.key, {
    cluster: "local",
    wsHost: "127.0.0.1",
    wsPort: node.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { endpoint: `${auth.url}/pusher/auth?user=${encodeURIComponent(user)}`, transport: "ajax" },
    userAuthentication: { endpoint: `${auth.url}/pusher/user-auth?user=${encodeURIComponent(user)}`, transport: "ajax" },
    ...extra,
  });
  p.errors = [];
  p.connection.bind("error", (e) => p.errors.push(e));
  clients.push(p);
  return p;
}

async function connected(p) {
  await until(() => p.connection.state === "connected", 5000, "connected");
  return p;
}

/* Subscribes and waits for pusher:subscription_succeeded (resolves with
 * the channel) or pusher:subscription_error (rejects). */
function subscribed(p, name) {
  const ch = p.subscribe(name);
  ch.log = [];
  ch.bind_global((event, data) => ch.log.push({ event, data }));
  return new Promise((resolve, reject) => {
    ch.bind("pusher:subscription_succeeded", () => resolve(ch));
    ch.bind("pusher:subscription_error", (e) => reject(Object.assign(new Error(`subscription_error ${JSON.stringify(e)}`), { detail: e })));
    setTimeout(() => reject(new Error(`no answer to subscribe ${name}`)), 5000);
  });
}

const got = (ch, event) => ch.log.filter((e) => e.event === event);

const threads = Number(process.env.HERALD_THREADS || 1);
const loopOf = (p) => Number(p.connection.socket_id.split(".")[1]) % threads;
/* A connected client on the given loop of node: clients are opened until
 * the kernel puts one there (the others are closed again; settle(), when
 * given, waits until the server has seen that). */
async function onLoop(node, loop, opts, settle = null) {
  for (let tries = 0; tries < 40; tries++) {
    const p = await connected(client(node, opts));
    if (loopOf(p) === loop % threads) {
      return p;
    }
    p.disconnect();
    if (settle) {
      await settle();
    }
  }
  throw new Error(`no connection reached loop ${loop}`);
}
/* pusher-js reports a pusher:error as {type: "PusherError", data}, and
 * one during the handshake wrapped as {type: "WebSocketError", error}. */
const codeOf = (e) => (e && e.data && e.data.code) || (e && e.error && e.error.data && e.error.data.code);
const hasCode = (p, code) => p.errors.find((e) => codeOf(e) === code);

try {
  // ---- connection --------------------------------------------------------
  const a = await connected(client(A, { user: "u1" }));
  const b = await connected(client(B, { user: "u2" }));
  check(/^\d+\.\d+$/.test(a.connection.socket_id), "connection_established gives a socket id", a.connection.socket_id);
  check(a.connection.socket_id !== b.connection.socket_id, "socket ids differ");
  check(a.connection.activityTimeout === 120000, "activity_timeout is 120 s", a.connection.activityTimeout);

  await step("pusher:ping gets pusher:pong", async () => {
    let pong = false;
    a.connection.connection.bind("pong", () => (pong = true));
    a.connection.send_event("pusher:ping", {});
    await until(() => pong, 3000, "pong");
  });

  // ---- public channels and triggering -------------------------------------
  const pubA = await subscribed(a, "orders");
  const pubB = await subscribed(b, "orders");
  await step("an event triggered with the SDK reaches subscribers on both nodes", async () => {
    await sdkA.trigger("orders", "shipped", { id: 7, text: "héllo \"quoted\"" });
    await until(() => got(pubA, "shipped").length && got(pubB, "shipped").length, 5000, "shipped");
    const d = got(pubB, "shipped")[0].data;
    return d.id === 7 && d.text === "héllo \"quoted\"" || `got ${JSON.stringify(d)}`;
  });
  await step("socket_id excludes the sender's socket", async () => {
    await sdkB.trigger("orders", "excluded", { n: 1 }, { socket_id: a.connection.socket_id });
    await until(() => got(pubB, "excluded").length, 5000, "excluded on b");
    await sleep(200);
    return got(pubA, "excluded").length === 0 || "a got it too";
  });
  const other = await subscribed(b, "inventory");
  await step("one trigger to several channels", async () => {
    await sdkB.trigger(["orders", "inventory"], "multi", { n: 2 });
    await until(() => got(pubA, "multi").length && got(other, "multi").length, 5000, "multi");
  });
  await step("batch events", async () => {
    await sdkA.triggerBatch([
      { channel: "orders", name: "batch-1", data: { n: 1 } },
      { channel: "inventory", name: "batch-2", data: "plain text" },
    ]);
    await until(() => got(pubB, "batch-1").length && got(other, "batch-2").length, 5000, "batch");
    return got(other, "batch-2")[0].data === "plain text" || JSON.stringify(got(other, "batch-2"));
  });
  await step("events arrive in the order they were triggered", async () => {
    for (let i = 0; i < 20; i++) {
      await sdkA.trigger("orders", "seq", { i });
    }
    await until(() => got(pubB, "seq").length === 20, 5000, "20 events");
    const seq = got(pubB, "seq").map((e) => e.data.i);
    return seq.every((v, i) => v === i) || seq.join(",");
  });

  // ---- private channels ---------------------------------------------------
  const privA = await subscribed(a, "private-room");
  const privB = await subscribed(b, "private-room");
  check(true, "private channel authorized through the auth endpoint");
  await step("a private channel with a forged signature is refused (AuthError, 401)", async () => {
    const f = await connected(client(A, { extra: { channelAuthorization: {
      endpoint: `${auth.url}/pusher/auth?forge=1`, transport: "ajax" } } }));
    try {
      await subscribed(f, "private-room");
      return "subscribed anyway";
    } catch (e) {
      return (e.detail && e.detail.status === 401 && e.detail.type === "AuthError") || e.message;
    }
  });
  await step("a private channel without auth is refused", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${A.port}/app/${APP.key}?protocol=7&client=js&version=8.6.0`);
    const msgs = [];
    ws.on("message", (m) => msgs.push(JSON.parse(m)));
    await until(() => msgs.length > 0, 3000, "established");
    ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: "private-room" } }));
    await until(() => msgs.find((m) => m.event === "pusher:subscription_error"), 3000, "subscription_error");
    ws.close();
  });
  await step("private events reach both sockets", async () => {
    await sdkB.trigger("private-room", "secret", { s: 1 });
    await until(() => got(privA, "secret").length && got(privB, "secret").length, 5000, "secret");
  });

  // ---- client events ------------------------------------------------------
  await step("client events reach the others, not the sender", async () => {
    privA.trigger("client-typing", { who: "u1" });
    await until(() => got(privB, "client-typing").length, 5000, "client-typing");
    await sleep(200);
    return (got(privA, "client-typing").length === 0 && got(privB, "client-typing")[0].data.who === "u1") ||
      JSON.stringify(got(privB, "client-typing"));
  });
  await step("client events over 10 a second are refused with 4301", async () => {
    a.errors.length = 0;
    for (let i = 0; i < 25; i++) {
      privA.trigger("client-flood", { i });
    }
    await until(() => hasCode(a, 4301), 3000, "4301");
    await sleep(300);
    const n = got(privB, "client-flood").length;
    return (n >= 10 && n < 25) || `b got ${n}`;
  });
  await step("client events on a public channel are refused with 4301", async () => {
    a.errors.length = 0;
    await sleep(1100);
    a.send_event("client-nope", { x: 1 }, "orders");
    await until(() => hasCode(a, 4301), 3000, "4301");
  });
  await step("an app without client events refuses them with 4301", async () => {
    const q = await connected(client(A, { app: QUIET_APP }));
    q.send_event("client-x", {}, "private-anything");
    await until(() => hasCode(q, 4301), 3000, "4301");
    q.disconnect();
  });

  // ---- presence -----------------------------------------------------------
  let presA, presB;
  await step("presence: the first member sees itself", async () => {
    presA = await subscribed(a, "presence-lobby");
    return (presA.members.count === 1 && presA.members.me && presA.members.me.id === "u1") ||
      JSON.stringify(presA.members);
  });
  const added = [];
  const removed = [];
  presA.bind("pusher:member_added", (m) => added.push(m));
  presA.bind("pusher:member_removed", (m) => removed.push(m));
  await step("presence: a second member (on the other node) sees both", async () => {
    presB = await subscribed(b, "presence-lobby");
    const ids = [];
    presB.members.each((m) => ids.push(m.id));
    return (presB.members.count === 2 && ids.sort().join() === "u1,u2" &&
      presB.members.get("u1").info.name === "User u1") || JSON.stringify(presB.members.members);
  });
  await step("presence: the first member hears member_added with user_info", async () => {
    await until(() => added.length === 1, 5000, "member_added");
    return (added[0].id === "u2" && added[0].info.name === "User u2") || JSON.stringify(added);
  });
  const b2 = await connected(client(A, { user: "u2" }));
  await step("presence: the same user on a second connection is not announced again", async () => {
    const p2 = await subscribed(b2, "presence-lobby");
    await sleep(300);
    return (added.length === 1 && p2.members.count === 2) || `added ${added.length}, count ${p2.members.count}`;
  });
  await step("presence: a user leaves only with its last connection", async () => {
    b2.unsubscribe("presence-lobby");
    await sleep(300);
    if (removed.length !== 0) {
      return "removed after the first of two connections";
    }
    b.unsubscribe("presence-lobby");
    await until(() => removed.length === 1, 5000, "member_removed");
    return (removed[0].id === "u2" && presA.members.count === 1) || JSON.stringify(removed);
  });
  await step("presence: client events carry the user_id", async () => {
    presB = await subscribed(b, "presence-lobby");
    await until(() => added.length === 2, 5000, "member_added again");
    let meta = null;
    presB.bind("client-hello", (d, m) => (meta = m));
    presA.trigger("client-hello", { hi: 1 });
    await until(() => meta, 5000, "client-hello");
    return meta.user_id === "u1" || JSON.stringify(meta);
  });

  // ---- cache channels -----------------------------------------------------
  await step("cache channel: pusher:cache_miss when nothing was triggered", async () => {
    const ch = await subscribed(a, "cache-empty");
    await until(() => got(ch, "pusher:cache_miss").length, 3000, "cache_miss");
  });
  await step("cache channel: the last event on subscribe", async () => {
    await sdkA.trigger("cache-price", "price", { v: 1 });
    await sdkA.trigger("cache-price", "price", { v: 2 });
    await sleep(100);
    const ch = await subscribed(b, "cache-price");
    await until(() => got(ch, "price").length, 3000, "cached price");
    return got(ch, "price")[0].data.v === 2 || JSON.stringify(got(ch, "price"));
  });

  // ---- encrypted channels -------------------------------------------------
  await step("private-encrypted: the SDK's ciphertext is passed through and decrypted by pusher-js", async () => {
    const ch = await subscribed(b, "private-encrypted-vault");
    await sdkA.trigger("private-encrypted-vault", "sealed", { gold: 42 });
    await until(() => got(ch, "sealed").length, 5000, "sealed");
    return got(ch, "sealed")[0].data.gold === 42 || JSON.stringify(got(ch, "sealed"));
  });

  // ---- the HTTP API's queries ---------------------------------------------
  await step("GET /channels lists occupied channels", async () => {
    const r = await sdkB.get({ path: "/channels" });
    const body = await r.json();
    const names = Object.keys(body.channels);
    return ["orders", "private-room", "presence-lobby"].every((n) => names.includes(n)) || JSON.stringify(body);
  });
  await step("GET /channels?filter_by_prefix=presence-&info=user_count", async () => {
    const r = await sdkA.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } });
    const body = await r.json();
    const names = Object.keys(body.channels);
    return (names.every((n) => n.startsWith("presence-")) && body.channels["presence-lobby"].user_count === 2) ||
      JSON.stringify(body);
  });
  await step("GET /channels/{name}?info=user_count,subscription_count", async () => {
    const r = await sdkB.get({ path: "/channels/presence-lobby", params: { info: "user_count,subscription_count" } });
    const body = await r.json();
    return (body.occupied === true && body.user_count === 2 && body.subscription_count >= 1) || JSON.stringify(body);
  });
  await step("GET /channels/{name}/users", async () => {
    const r = await sdkA.get({ path: "/channels/presence-lobby/users" });
    const body = await r.json();
    return body.users.map((u) => u.id).sort().join() === "u1,u2" || JSON.stringify(body);
  });
  await step("GET /channels on one node counts the subscribers of every node", async () => {
    await subscribed(a, "only-on-a");
    await subscribed(b, "only-on-a");
    let body;
    await until(async () => {
      const r = await sdkB.get({ path: "/channels", params: { info: "subscription_count" } });
      body = await r.json();
      return body.channels["only-on-a"] && body.channels["only-on-a"].subscription_count === 2;
    }, 3000, "only-on-a with 2 subscriptions").catch(() => {});
    return (body.channels["only-on-a"] && body.channels["only-on-a"].subscription_count === 2) ||
      JSON.stringify(body);
  });
  await step("an unsubscribed channel leaves GET /channels", async () => {
    a.unsubscribe("only-on-a");
    b.unsubscribe("only-on-a");
    let body;
    await until(async () => {
      const r = await sdkA.get({ path: "/channels" });
      body = await r.json();
      return !body.channels["only-on-a"];
    }, 3000, "only-on-a gone").catch(() => {});
    return !body.channels["only-on-a"] || JSON.stringify(body);
  });
  await step("GET /channels/{name} of an empty channel", async () => {
    const r = await sdkA.get({ path: "/channels/nobody-here", params: { info: "subscription_count" } });
    const body = await r.json();
    return (body.occupied === false && body.subscription_count === 0) || JSON.stringify(body);
  });

  // ---- signin, sending to users, terminating ------------------------------
  const s1 = client(A, { user: "carol" });
  await connected(s1);
  const userEvents = [];
  s1.user.bind("note", (d) => userEvents.push(d));
  await step("pusher:signin with user_data", async () => {
    s1.signin();
    await until(() => s1.user.user_data && s1.user.user_data.id === "carol", 5000, "signin_success");
  });
  const s2 = await connected(client(B, { user: "carol" }));
  const userEvents2 = [];
  s2.user.bind("note", (d) => userEvents2.push(d));
  s2.signin();
  await until(() => s2.user.user_data, 5000, "second signin");
  await step("sendToUser reaches every connection of the user, on every node", async () => {
    await sleep(200); // the #server-to-user channel is subscribed after signin_success
    await sdkB.sendToUser("carol", "note", { text: "for carol" });
    await until(() => userEvents.length && userEvents2.length, 5000, "user events");
    return userEvents[0].text === "for carol" || JSON.stringify(userEvents);
  });
  await step("a forged signin is refused and closed with 4009", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${B.port}/app/${APP.key}?protocol=7`);
    const msgs = [];
    let code = 0;
    ws.on("message", (m) => msgs.push(JSON.parse(m)));
    ws.on("close", (c) => (code = c));
    await until(() => msgs.length, 3000, "established");
    ws.send(JSON.stringify({ event: "pusher:signin", data: { auth: `${APP.key}:${"0".repeat(64)}`, user_data: "{\"id\":\"mallory\"}" } }));
    await until(() => code, 3000, "close");
    const err = msgs.find((m) => m.event === "pusher:error");
    return (code === 4009 && err && err.data.code === 4009) || `close ${code}, ${JSON.stringify(msgs)}`;
  });
  await step("user_authentication_timeout: no signin in time closes with 4009; a signin keeps it", async () => {
    const open = (app) => {
      const ws = new WebSocket(`ws://127.0.0.1:${B.port}/app/${app.key}?protocol=7`);
      const r = { ws, msgs: [], code: 0 };
      ws.on("message", (m) => r.msgs.push(JSON.parse(m)));
      ws.on("close", (c) => (r.code = c));
      return r;
    };
    const lazy = open(SIGNIN_APP);
    const prompt = open(SIGNIN_APP);
    await until(() => lazy.msgs.length && prompt.msgs.length, 3000, "established");
    const sid = JSON.parse(prompt.msgs[0].data).socket_id;
    const userData = JSON.stringify({ id: "quick" });
    const sig = crypto.createHmac("sha256", SIGNIN_APP.secret).update(`${sid}::user::${userData}`).digest("hex");
    prompt.ws.send(JSON.stringify({ event: "pusher:signin", data: { auth: `${SIGNIN_APP.key}:${sig}`, user_data: userData } }));
    await until(() => lazy.code, 4000, "close of the connection that did not sign in");
    await sleep(1500);
    const err = lazy.msgs.find((m) => m.event === "pusher:error");
    const signed = prompt.msgs.find((m) => m.event === "pusher:signin_success");
    const metrics = await (await fetch(`${B.url}/metrics`)).text();
    prompt.ws.close();
    return (lazy.code === 4009 && err && err.data.code === 4009 && signed && prompt.code === 0 &&
      metrics.includes(`herald_pusher_signin_timeouts_total{app="${SIGNIN_APP.id}"} 1`)) ||
      `lazy ${lazy.code} ${JSON.stringify(lazy.msgs)}; prompt ${prompt.code} ${JSON.stringify(prompt.msgs)}`;
  });
  await step("subscribing to another user's channel is refused", async () => {
    // pusher-js will not name a #channel itself: the raw event.
    let err = null;
    s1.connection.bind("message", (m) => {
      if (m.event === "pusher:subscription_error" && m.channel === "#server-to-user-dave") {
        err = m.data;
      }
    });
    s1.send_event("pusher:subscribe", { channel: "#server-to-user-dave" });
    await until(() => err, 3000, "subscription_error");
    return err.status === 401 || JSON.stringify(err);
  });
  await step("terminateUserConnections closes every connection of the user (4009)", async () => {
    await sdkA.terminateUserConnections("carol");
    await until(() => hasCode(s1, 4009) &&
      hasCode(s2, 4009), 5000, "4009 on both");
    return a.connection.state === "connected" || "an unrelated connection went too";
  });

  // ---- webhooks -----------------------------------------------------------
  await step("webhooks carry X-Pusher-Key and a signature the pusher SDK accepts", async () => {
    await until(() => hooks.got.length > 0, 5000, "a webhook");
    await sleep(500);
    const bad = hooks.got.filter((r) => !sdkA.webhook({ headers: r.headers, rawBody: r.body }).isValid());
    const forged = sdkA.webhook({ headers: { ...hooks.got[0].headers, "x-pusher-signature": "0".repeat(64) },
      rawBody: hooks.got[0].body }).isValid();
    return (bad.length === 0 && !forged && hooks.got.every((r) => r.headers["x-pusher-key"] === APP.key)) ||
      `${bad.length} invalid of ${hooks.got.length}`;
  });
  const events = () => hooks.got.flatMap((r) => JSON.parse(r.body).events);
  const count = (name, channel, extra = () => true) =>
    events().filter((e) => e.name === name && e.channel === channel && extra(e)).length;
  if (process.env.SHOW_HOOKS) console.log(JSON.stringify(events(), null, 0));
  await step("channel_occupied once for the cluster", async () => {
    await until(() => count("channel_occupied", "orders") > 0, 5000, "channel_occupied");
    return count("channel_occupied", "orders") === 1 || `${count("channel_occupied", "orders")} times`;
  });
  await step("channel_vacated once, after the last subscriber left", async () => {
    await until(() => count("channel_vacated", "only-on-a") > 0, 5000, "channel_vacated");
    return count("channel_vacated", "only-on-a") === 1 || `${count("channel_vacated", "only-on-a")} times`;
  });
  await step("member_added and member_removed, once per user change", async () => {
    const isU2 = (e) => e.user_id === "u2";
    await until(() => count("member_removed", "presence-lobby", isU2) === 1, 5000, "member_removed");
    return (count("member_added", "presence-lobby", isU2) === 2 && count("member_added", "presence-lobby", (e) => e.user_id === "u1") === 1) ||
      JSON.stringify(events().filter((e) => e.channel === "presence-lobby"));
  });
  await step("client_event with its event, data, socket_id and user_id", async () => {
    const ce = events().filter((e) => e.name === "client_event" && e.event === "client-hello");
    return (ce.length === 1 && ce[0].channel === "presence-lobby" && ce[0].user_id === "u1" &&
      ce[0].socket_id === a.connection.socket_id && JSON.parse(ce[0].data).hi === 1) || JSON.stringify(ce);
  });
  await step("cache_miss", async () => count("cache_miss", "cache-empty") === 1 || JSON.stringify(events()));

  // ---- across loops (HERALD_THREADS) and nodes (--redis) --------------------
  // Each pair below has its first connection on loop 0 of A and its
  // second on loop 1 of B: with several loops they are on different
  // loops, over Redis on different nodes (with one loop of one node, the
  // same checks hold on one loop).
  const loops = threads > 1 ? `loops ${0} and ${1 % threads}` : "one loop";
  await step(`presence across ${loops}: one member_added per user, the list on subscribe, member_removed with the last connection`, async () => {
    const w0 = await onLoop(A, 0, { user: "w0" });
    const w1 = await onLoop(B, 1, { user: "w1" });
    const v0 = await onLoop(A, 0, { user: "v1" });
    const v1 = await onLoop(B, 1, { user: "v1" });
    const pw0 = await subscribed(w0, "presence-loops");
    const pw1 = await subscribed(w1, "presence-loops");
    const seen = (ch, ev, id) => got(ch, ev).filter((e) => e.data.id === id).length;
    await until(() => seen(pw0, "pusher:member_added", "w1") === 1, 5000, "w0 hears w1");
    const pv0 = await subscribed(v0, "presence-loops");
    await until(() => seen(pw0, "pusher:member_added", "v1") && seen(pw1, "pusher:member_added", "v1"), 5000, "v1 added");
    const pv1 = await subscribed(v1, "presence-loops");
    const ids = [];
    pv1.members.each((m) => ids.push(m.id));
    await sleep(300);
    if (seen(pw0, "pusher:member_added", "v1") !== 1 || seen(pw1, "pusher:member_added", "v1") !== 1) {
      return "v1's second connection was announced again";
    }
    if (ids.sort().join() !== "v1,w0,w1" || pv0.members.count !== 3) {
      return `member list ${ids.sort().join()} (${pv0.members.count} on the first)`;
    }
    v0.unsubscribe("presence-loops");
    await sleep(300);
    if (seen(pw0, "pusher:member_removed", "v1") + seen(pw1, "pusher:member_removed", "v1") !== 0) {
      return "v1 removed while its other connection stays";
    }
    v1.unsubscribe("presence-loops");
    await until(() => seen(pw0, "pusher:member_removed", "v1") && seen(pw1, "pusher:member_removed", "v1"), 5000, "member_removed");
    await sleep(300);
    return (seen(pw0, "pusher:member_removed", "v1") === 1 && seen(pw1, "pusher:member_removed", "v1") === 1 &&
      pw0.members.count === 2 && pw1.members.count === 2) || `removed ${seen(pw0, "pusher:member_removed", "v1")}`;
  });
  await step(`presence across ${loops}: the API counts users and lists them for the whole node`, async () => {
    const r = await sdkA.get({ path: "/channels/presence-loops", params: { info: "user_count,subscription_count" } });
    const body = await r.json();
    const u = await (await sdkB.get({ path: "/channels/presence-loops/users" })).json();
    return (body.occupied === true && body.user_count === 2 && body.subscription_count === 2 &&
      u.users.map((x) => x.id).sort().join() === "w0,w1") || JSON.stringify([body, u]);
  });
  await step(`presence across ${loops}: member webhooks once per user change`, async () => {
    const n = (name, user) => count(name, "presence-loops", (e) => e.user_id === user);
    await until(() => n("member_removed", "v1") > 0, 5000, "member_removed webhook");
    await sleep(500);
    return (n("member_added", "v1") === 1 && n("member_removed", "v1") === 1 && n("member_added", "w0") === 1 &&
      n("member_added", "w1") === 1) || JSON.stringify(events().filter((e) => e.channel === "presence-loops"));
  });
  await step(`client events across ${loops}: every other subscriber gets them, the sender does not, one webhook each`, async () => {
    const c0 = await onLoop(A, 0, { user: "c0" });
    const d0 = await onLoop(A, 0, { user: "d0" });
    const c1 = await onLoop(B, 1, { user: "c1" });
    const [p0, q0, p1] = [await subscribed(c0, "private-loops"), await subscribed(d0, "private-loops"),
      await subscribed(c1, "private-loops")];
    p0.trigger("client-from0", { n: 0 });
    p1.trigger("client-from1", { n: 1 });
    await until(() => got(q0, "client-from0").length && got(p1, "client-from0").length &&
      got(p0, "client-from1").length && got(q0, "client-from1").length, 5000, "client events");
    await sleep(300);
    const ce = (ev) => events().filter((e) => e.name === "client_event" && e.event === ev).length;
    await until(() => ce("client-from0") && ce("client-from1"), 5000, "client_event webhooks");
    await sleep(300);
    return (got(p0, "client-from0").length === 0 && got(p1, "client-from1").length === 0 &&
      got(q0, "client-from0").length === 1 && got(p1, "client-from0").length === 1 &&
      ce("client-from0") === 1 && ce("client-from1") === 1) ||
      `own ${got(p0, "client-from0").length}/${got(p1, "client-from1").length}, webhooks ${ce("client-from0")}/${ce("client-from1")}`;
  });
  await step(`cache channels across ${loops}: a subscriber gets the last event whichever loop published it`, async () => {
    const c0 = await onLoop(A, 0, { user: "k0" });
    const c1 = await onLoop(B, 1, { user: "k1" });
    const p0 = await subscribed(c0, "private-cache-loops");
    const p1 = await subscribed(c1, "private-cache-loops");
    const last = async (node, loop, want) => {
      const x = await onLoop(node, loop, { user: "kx" });
      const ch = await subscribed(x, "private-cache-loops");
      await until(() => got(ch, "client-price").length, 3000, "cached event");
      x.disconnect();
      return got(ch, "client-price")[0].data.v === want || `loop ${loop}: ${JSON.stringify(got(ch, "client-price"))}`;
    };
    p0.trigger("client-price", { v: 5 });
    await until(() => got(p1, "client-price").length === 1, 3000, "v 5 across");
    const r1 = await last(B, 1, 5);
    if (r1 !== true) {
      return r1;
    }
    p1.trigger("client-price", { v: 6 });
    await until(() => got(p0, "client-price").length === 1, 3000, "v 6 across");
    const r0 = await last(A, 0, 6);
    if (r0 !== true) {
      return r0;
    }
    await sdkB.trigger("private-cache-loops", "client-price", { v: 7 });
    const r2 = await last(A, 0, 7);
    if (r2 !== true) {
      return r2;
    }
    const r = await sdkA.get({ path: "/channels/private-cache-loops", params: { info: "cache" } });
    const body = await r.json();
    return (body.cache && JSON.parse(body.cache.data).v === 7) || JSON.stringify(body);
  });
  await step(`the channels API across ${loops}: subscription counts, occupied and vacated once`, async () => {
    const c0 = await onLoop(A, 0, { user: "a0" });
    const c1 = await onLoop(B, 1, { user: "a1" });
    await subscribed(c0, "api-loops");
    await subscribed(c1, "api-loops");
    let body;
    await until(async () => {
      body = await (await sdkA.get({ path: "/channels", params: { info: "subscription_count" } })).json();
      return body.channels["api-loops"] && body.channels["api-loops"].subscription_count === 2;
    }, 3000, "api-loops with 2 subscriptions").catch(() => {});
    if (!(body.channels["api-loops"] && body.channels["api-loops"].subscription_count === 2)) {
      return JSON.stringify(body);
    }
    c0.unsubscribe("api-loops");
    await sleep(200);
    const one = await (await sdkB.get({ path: "/channels/api-loops", params: { info: "subscription_count" } })).json();
    c1.unsubscribe("api-loops");
    await until(async () => {
      body = await (await sdkB.get({ path: "/channels/api-loops", params: { info: "subscription_count" } })).json();
      return body.occupied === false;
    }, 3000, "api-loops vacated").catch(() => {});
    await until(() => count("channel_vacated", "api-loops") > 0, 5000, "channel_vacated");
    await sleep(300);
    return (one.occupied === true && one.subscription_count === 1 && body.occupied === false &&
      count("channel_occupied", "api-loops") === 1 && count("channel_vacated", "api-loops") === 1) ||
      JSON.stringify([one, body, count("channel_occupied", "api-loops"), count("channel_vacated", "api-loops")]);
  });
  await step(`/metrics on every loop gives the node's Pusher figures`, async () => {
    // A new TCP connection each time (no keep-alive), so the kernel
    // spreads the requests over the loops too.
    const metrics = (node) => new Promise((resolve, reject) => {
      http.get({ host: "127.0.0.1", port: node.port, path: "/metrics", agent: false }, (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => resolve(body));
      }).on("error", reject);
    });
    const val = (text, name) => Number((new RegExp(`${name}\\{app="${APP.id}"\\} (\\d+)`).exec(text) || [])[1]);
    const seen = new Set();
    for (let i = 0; i < 8; i++) {
      const text = await metrics(A);
      seen.add(`${val(text, "herald_pusher_connections")}/${val(text, "herald_pusher_connects_total")}/` +
        `${val(text, "herald_pusher_client_events_total")}`);
    }
    return (seen.size === 1 && ![...seen][0].includes("NaN")) || [...seen].join(" ");
  });
  if (redisMode) {
    // Each loop of a node has its own Redis engine, yet the node list
    // must hold one entry per node, carrying the Pusher connections of
    // all its loops (other nodes' max_connections reads them there).
    await step(`the node list: one entry per node, with the Pusher connections of ${threads > 1 ? "all its loops" : "the node"}`, async () => {
      const held = [await onLoop(A, 0), await onLoop(A, 1), await onLoop(B, 0), await onLoop(B, 1)];
      const conns = async (node) => Number((new RegExp(`herald_pusher_connections\\{app="${APP.id}"\\} (\\d+)`)
        .exec(await (await fetch(`${node.url}/metrics`)).text()) || [])[1]);
      const info = async (node) => (await (await fetch(`${node.url}/api/info`,
        { headers: { authorization: `apikey ${HERALD_API_KEY}` } })).json()).result.nodes;
      // A list of [name, connections] per entry, sorted.
      const entries = (list) => list.map((n) => [n.name, n.pusher ? n.pusher[APP.id] : null]).sort();
      let last = null;
      let good = false;
      // The entries are written every second: the other node's may lag.
      await until(async () => {
        const [ca, cb] = [await conns(A), await conns(B)];
        last = { ca, cb, a: entries(await info(A)), b: entries(await info(B)) };
        const want = JSON.stringify([["a", ca], ["b", cb]]);
        good = ca >= 2 && cb >= 2 && JSON.stringify(last.a) === want && JSON.stringify(last.b) === want;
        return good;
      }, 5000, "the node list").catch(() => {});
      held.forEach((p) => p.disconnect());
      return good || JSON.stringify(last);
    });
  }
  await step(`signin, sendToUser and terminate across ${loops}`, async () => {
    const u0 = await onLoop(A, 0, { user: "erin" });
    const u1 = await onLoop(B, 1, { user: "erin" });
    const other0 = await onLoop(A, 0, { user: "frank" });
    const other1 = await onLoop(B, 1, { user: "frank" });
    const notes = [[], []];
    u0.user.bind("note", (d) => notes[0].push(d));
    u1.user.bind("note", (d) => notes[1].push(d));
    u0.signin();
    u1.signin();
    await until(() => u0.user.user_data && u1.user.user_data, 5000, "signin_success");
    await sleep(200); // the #server-to-user channel is subscribed after signin_success
    await sdkA.sendToUser("erin", "note", { text: "for erin" });
    await until(() => notes[0].length && notes[1].length, 5000, "the note on both loops");
    await sdkB.terminateUserConnections("erin");
    await until(() => hasCode(u0, 4009) && hasCode(u1, 4009), 5000, "4009 on both loops");
    await sleep(200);
    return (other0.connection.state === "connected" && other1.connection.state === "connected" &&
      notes[0].length === 1 && notes[1].length === 1) || "an unrelated connection went, or a note came twice";
  });

  // ---- refusals -----------------------------------------------------------
  await step("an unknown app key is refused with 4001", async () => {
    const x = client(A, { app: { ...APP, key: "no-such-key" } });
    await until(() => hasCode(x, 4001), 5000, "4001");
    x.disconnect();
  });
  for (const [what, q, code] of [["no protocol version", "", 4008], ["protocol 3", "?protocol=3", 4007],
    ["a protocol that is no number", "?protocol=seven", 4006]]) {
    await step(`${what} is refused with ${code}`, async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${A.port}/app/${APP.key}${q}`);
      let close = 0;
      const msgs = [];
      ws.on("message", (m) => msgs.push(JSON.parse(m)));
      ws.on("close", (c) => (close = c));
      await until(() => close, 3000, "close");
      return (close === code && msgs[0].event === "pusher:error" && msgs[0].data.code === code) ||
        `close ${close}, ${JSON.stringify(msgs)}`;
    });
  }
  await step("over max_connections is refused with 4004 (the two on different loops)", async () => {
    // A connection closed on the way counts until the server has seen it go.
    const conns = async (node) => Number((new RegExp(`herald_pusher_connections\\{app="${QUOTA_APP.id}"\\} (\\d+)`)
      .exec(await (await fetch(`${node.url}/metrics`)).text()) || [])[1]);
    const q1 = await onLoop(A, 0, { app: QUOTA_APP }, () => until(async () => (await conns(A)) === 0, 3000, "closed"));
    const q2 = await onLoop(B, 1, { app: QUOTA_APP },
      () => until(async () => (await conns(B)) === (A === B ? 1 : 0), 3000, "closed"));
    if (redisMode) {
      await sleep(2500); // the nodes learn each other's counts every second
    }
    // Several, so that with several loops each loop refuses one (likely).
    const q3 = [A, B, A, B].map((node) => client(node, { app: QUOTA_APP }));
    await until(() => q3.every((q) => hasCode(q, 4004)), 5000, "4004 for each");
    q3.forEach((q) => q.disconnect());
    q1.disconnect();
    q2.disconnect();
  });
  if (!redisMode) { // other nodes' counts are learned each second: a burst on two nodes may pass
    await step("a burst of connections spread over the loops admits exactly max_connections", async () => {
      const conns = async () => Number((new RegExp(`herald_pusher_connections\\{app="${QUOTA_APP.id}"\\} (\\d+)`)
        .exec(await (await fetch(`${A.url}/metrics`)).text()) || [])[1]);
      await until(async () => (await conns()) === 0, 5000, "the quota app's connections closed");
      const socks = Array.from({ length: 12 }, () => {
        const ws = new WebSocket(`ws://127.0.0.1:${A.port}/app/${QUOTA_APP.key}?protocol=7`);
        const r = { ws, first: null };
        ws.on("message", (m) => (r.first = r.first || JSON.parse(m)));
        return r;
      });
      await until(() => socks.every((r) => r.first), 5000, "every answer");
      const ok = socks.filter((r) => r.first.event === "pusher:connection_established");
      const loopsUsed = new Set(ok.map((r) => Number(JSON.parse(r.first.data).socket_id.split(".")[1]) % threads));
      const refused = socks.filter((r) => r.first.event === "pusher:error" && r.first.data.code === 4004).length;
      socks.forEach((r) => r.ws.close());
      return (ok.length === 2 && refused === 10) || `${ok.length} admitted on loops ${[...loopsUsed]}, ${refused} refused`;
    });
  }
  // The limits of an app, over the raw protocol (the limit app allows one
  // presence member and two channels per connection).
  async function raw(node, app) {
    let ws, msgs;
    // The quota app may still count connections that are closing.
    for (let tries = 0; ; tries++) {
      ws = new WebSocket(`ws://127.0.0.1:${node.port}/app/${app.key}?protocol=7`);
      msgs = [];
      const mine = msgs;
      ws.on("message", (m) => mine.push(JSON.parse(m)));
      await until(() => msgs.length, 3000, "established");
      if (msgs[0].event === "pusher:connection_established" || tries === 30) {
        break;
      }
      ws.close();
      await sleep(100);
    }
    const sid = JSON.parse(msgs[0].data).socket_id;
    const r = {
      ws, msgs,
      sign: (text) => `${app.key}:${crypto.createHmac("sha256", app.secret).update(text).digest("hex")}`,
      sub(channel, cd) {
        const data = { channel };
        if (channel.startsWith("private-") || channel.startsWith("presence-")) {
          data.auth = r.sign(cd ? `${sid}:${channel}:${cd}` : `${sid}:${channel}`);
          if (cd) data.channel_data = cd;
        }
        ws.send(JSON.stringify({ event: "pusher:subscribe", data }));
      },
      answer: (channel) => until(() => msgs.find((m) => m.channel === channel &&
        (m.event === "pusher_internal:subscription_succeeded" || m.event === "pusher:subscription_error")), 3000, `answer on ${channel}`),
    };
    return r;
  }
  await step("a full presence channel refuses a new user (LimitReached 403), not a known one", async () => {
    const r1 = await raw(A, LIMIT_APP);
    const r2 = await raw(B, LIMIT_APP);
    r1.sub("presence-small", JSON.stringify({ user_id: "x1" }));
    const a1 = await r1.answer("presence-small");
    await sleep(200);
    r2.sub("presence-small", JSON.stringify({ user_id: "x2" }));
    const a2 = await r2.answer("presence-small");
    const r3 = await raw(B, LIMIT_APP);
    r3.sub("presence-small", JSON.stringify({ user_id: "x1" }));
    const a3 = await r3.answer("presence-small");
    [r1, r2, r3].forEach((r) => r.ws.close());
    return (a1.event === "pusher_internal:subscription_succeeded" && a2.event === "pusher:subscription_error" &&
      a2.data.status === 403 && a3.event === "pusher_internal:subscription_succeeded") ||
      JSON.stringify([a1, a2, a3]);
  });
  await step("max_channels per connection (LimitReached 403)", async () => {
    const r = await raw(A, LIMIT_APP);
    for (const c of ["one", "two", "three"]) {
      r.sub(c);
      await r.answer(c);
    }
    const a = r.msgs.find((m) => m.channel === "three");
    r.ws.close();
    return (a.event === "pusher:subscription_error" && a.data.status === 403) || JSON.stringify(a);
  });
  await step("user_info over 1 KiB is refused (InvalidChannelData 400)", async () => {
    const r = await raw(A, APP);
    r.sub("presence-big", JSON.stringify({ user_id: "big", user_info: { pad: "x".repeat(2000) } }));
    const a = await r.answer("presence-big");
    r.ws.close();
    return (a.event === "pusher:subscription_error" && a.data.status === 400) || JSON.stringify(a);
  });
  await step("a client event over 10 KB is refused with 4301", async () => {
    const r = await raw(A, APP);
    r.sub("private-big");
    await r.answer("private-big");
    r.ws.send(JSON.stringify({ event: "client-big", channel: "private-big", data: { pad: "x".repeat(11000) } }));
    const e = await until(() => r.msgs.find((m) => m.event === "pusher:error"), 3000, "4301");
    r.ws.close();
    return e.data.code === 4301 || JSON.stringify(e);
  });
  await step("messages over rate_limits.commands get pusher:error 4301, the connection stays", async () => {
    const r = await raw(A, APP);
    for (let i = 0; i < 600; i++) { // lib.mjs: burst 200, then 100/s
      r.ws.send("{\"event\":\"pusher:ping\",\"data\":{}}");
    }
    await until(() => r.msgs.find((m) => m.event === "pusher:error" && m.data.code === 4301), 5000, "4301");
    await sleep(1100);
    r.ws.send("{\"event\":\"pusher:ping\",\"data\":{}}");
    const pongs = r.msgs.filter((m) => m.event === "pusher:pong").length;
    await until(() => r.msgs.filter((m) => m.event === "pusher:pong").length > pongs, 3000, "a pong later");
    r.ws.close();
  });
  await step("refusals are counted in /metrics", async () => {
    const text = await (await fetch(`${A.url}/metrics`)).text();
    const val = (name, app) => Number((new RegExp(`${name}\\{app="${app}"\\} (\\d+)`).exec(text) || [])[1]);
    return (val("herald_pusher_subscriptions_refused_total", LIMIT_APP.id) >= 1 &&
      val("herald_pusher_client_events_refused_total", APP.id) >= 1 &&
      val("herald_pusher_refused_total", APP.id) >= 1) || text.split("\n").filter((l) => l.startsWith("herald_pusher")).join("; ");
  });
  await step("a request signed with the wrong secret gets 401", async () => {
    const r = await signedRequest(A, "POST", "/events", { body: { name: "x", channel: "orders", data: "{}" }, secret: "wrong" });
    return (r.status === 401 && /signature/.test(r.text)) || `${r.status} ${r.text}`;
  });
  await step("the SDK with the wrong secret gets 401", async () => {
    const bad = new PusherServer({ appId: APP.id, key: APP.key, secret: "not-the-secret", host: "127.0.0.1", port: A.port });
    try {
      await bad.trigger("orders", "x", {});
      return "accepted";
    } catch (e) {
      return e.status === 401 || `status ${e.status}`;
    }
  });
  await step("a stale timestamp (over 600 s) gets 401", async () => {
    const r = await signedRequest(A, "GET", "/channels", { timestamp: Math.floor(Date.now() / 1000) - 700 });
    return (r.status === 401 && /timestamp/.test(r.text)) || `${r.status} ${r.text}`;
  });
  await step("a body that does not match body_md5 gets 401", async () => {
    const r = await signedRequest(A, "POST", "/events", { body: { name: "x", channel: "orders", data: "{}" }, bodyMd5: "0".repeat(32) });
    return (r.status === 401 && /body_md5/.test(r.text)) || `${r.status} ${r.text}`;
  });
  await step("an unknown auth_key gets 401", async () => {
    const r = await signedRequest(A, "GET", "/channels", { app: { ...APP, key: "other" } });
    return r.status === 401 || `${r.status} ${r.text}`;
  });
  await step("more than 32 query parameters get 401", async () => {
    const params = {};
    for (let i = 0; i < 40; i++) {
      params[`p${i}`] = "x";
    }
    const r = await signedRequest(A, "GET", "/channels", { params });
    return (r.status === 401 && /too many/.test(r.text)) || `${r.status} ${r.text}`;
  });
  await step("an unknown app id gets 404", async () => {
    const r = await signedRequest(A, "GET", "/channels", { app: { ...APP, id: "9999" } });
    return r.status === 404 || `${r.status} ${r.text}`;
  });
  await step("event data over 10 KB gets 413", async () => {
    const r = await signedRequest(A, "POST", "/events", { body: { name: "big", channel: "orders", data: "x".repeat(10241) } });
    return r.status === 413 || `${r.status} ${r.text}`;
  });
  await step("more than 100 channels get 400", async () => {
    const channels = Array.from({ length: 101 }, (_, i) => `c${i}`);
    const r = await signedRequest(A, "POST", "/events", { body: { name: "x", channels, data: "{}" } });
    return r.status === 400 || `${r.status} ${r.text}`;
  });
  await step("an invalid channel name gets 400", async () => {
    const r = await signedRequest(A, "POST", "/events", { body: { name: "x", channel: "bad channel!", data: "{}" } });
    return r.status === 400 || `${r.status} ${r.text}`;
  });
  await step("a batch of 11 events gets 400", async () => {
    const batch = Array.from({ length: 11 }, () => ({ name: "x", channel: "orders", data: "{}" }));
    const r = await signedRequest(A, "POST", "/batch_events", { body: { batch } });
    return r.status === 400 || `${r.status} ${r.text}`;
  });
  await step("data that is not a string gets 400", async () => {
    const r = await signedRequest(A, "POST", "/events", { body: { name: "x", channel: "orders", data: { a: 1 } } });
    return r.status === 400 || `${r.status} ${r.text}`;
  });
  await step("users of a non-presence channel get 400", async () => {
    const r = await signedRequest(A, "GET", "/channels/orders/users");
    return r.status === 400 || `${r.status} ${r.text}`;
  });
  await step("info=user_count without a presence- prefix gets 400", async () => {
    const r = await signedRequest(A, "GET", "/channels", { params: { info: "user_count" } });
    return r.status === 400 || `${r.status} ${r.text}`;
  });
  await step("a malformed message is answered with pusher:error, and the connection stays", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${A.port}/app/${APP.key}?protocol=7`);
    const msgs = [];
    ws.on("message", (m) => msgs.push(JSON.parse(m)));
    await until(() => msgs.length, 3000, "established");
    ws.send("{not json");
    await until(() => msgs.find((m) => m.event === "pusher:error"), 3000, "pusher:error");
    ws.send(JSON.stringify({ event: "pusher:ping", data: {} }));
    await until(() => msgs.find((m) => m.event === "pusher:pong"), 3000, "pong after the error");
    ws.close();
  });
  await step("an invalid channel name is refused with subscription_error 400", async () => {
    try {
      await subscribed(a, "bad channel!");
      return "subscribed";
    } catch (e) {
      return (e.detail && e.detail.status === 400) || e.message;
    }
  });
} catch (e) {
  check(false, "the test ran to its end", e.stack);
} finally {
  for (const c of clients) {
    try {
      c.disconnect();
    } catch {}
  }
  auth.server.close();
  hooks.server.close();
}
for (const node of new Set(nodes)) {
  await stopHerald(node);
}
const rc = summary();
cleanup();
process.exit(rc);
