// lib.mjs - what the Pusher compatibility tests share: starting herald
// (one node, or two over a redis-server of their own), the app
// configuration, a small auth endpoint built on the `pusher` server SDK, a
// webhook receiver, checks and waits.

import { spawn, spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export const APP = {
  id: "1001",
  key: "herald-app-key",
  secret: "herald-test-secret-0123456789abcdef",
};
export const QUOTA_APP = { id: "1002", key: "quota-key", secret: "quota-secret-0123456789" };
export const LIMIT_APP = { id: "1004", key: "limit-key", secret: "limit-secret-0123456789" };
export const QUIET_APP = { id: "1003", key: "quiet-key", secret: "quiet-secret-0123456789" };
export const SIGNIN_APP = { id: "1005", key: "signin-key", secret: "signin-secret-0123456789" };
/* herald's own HTTP API (/api/info: the node list), beside Pusher's. */
export const HERALD_API_KEY = "herald-api-key-0123456789";
export const ENCRYPTION_KEY = crypto.randomBytes(32).toString("base64");

let passed = 0;
let failed = 0;
const failures = [];

export function check(ok, what, detail) {
  if (ok) {
    passed++;
    console.log(`ok   - ${what}`);
  } else {
    failed++;
    failures.push(what);
    console.log(`FAIL - ${what}${detail !== undefined ? `: ${detail}` : ""}`);
  }
  return ok;
}

/* Runs fn(); a throw (a timeout, say) is one failed check. */
export async function step(what, fn) {
  try {
    const r = await fn();
    return check(r !== false && typeof r !== "string", what, typeof r === "string" ? r : undefined);
  } catch (e) {
    return check(false, what, String(e && e.message ? e.message.split("\n")[0] : e));
  }
}

export function summary() {
  console.log(`${passed} passed, ${failed} failed`);
  if (failed) {
    console.log("failures:\n  " + failures.join("\n  "));
  }
  return failed ? 1 : 0;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* Waits until pred() is true (polled), or throws after ms. */
export async function until(pred, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) {
      return v;
    }
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await sleep(20);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

const children = [];
const tmpdirs = [];

export function cleanup() {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {}
  }
  for (const d of tmpdirs) {
    fs.rmSync(d, { recursive: true, force: true });
  }
}
process.on("exit", cleanup);

export function config(webhookUrl) {
  const hooks = webhookUrl ? { webhooks: { url: webhookUrl } } : {};
  return {
    apps: [
      { ...APP, enable_client_messages: true, client_events_per_s: 10, ...hooks },
      { ...QUOTA_APP, max_connections: 2 },
      { ...LIMIT_APP, max_presence_members: 1, max_channels: 2 },
      { ...QUIET_APP, enable_client_messages: false },
      { ...SIGNIN_APP, user_authentication_timeout: 1 },
    ],
  };
}

/* Starts `herald serve` with the Pusher apps; resolves {port, url, proc}. */
export async function startHerald(binary, { name = "a", redisPort = null, webhookUrl = null, origins = null } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-pusher-"));
  tmpdirs.push(dir);
  // A command rate far under the default (1000/s, burst 2000), so that the
  // flood test trips it however slowly a sanitizer runs the server.
  const cfg = { pusher: config(webhookUrl), api_key: HERALD_API_KEY, log_level: process.env.HERALD_LOG_LEVEL || "warn",
    rate_limits: { commands: { per_s: 100, burst: 200 } } };
  if (origins) {
    cfg.allowed_origins = origins;
  }
  if (redisPort) {
    cfg.engine = "redis";
    cfg.redis = { addresses: [`127.0.0.1:${redisPort}`], presence_ttl: 3 };
  }
  const file = path.join(dir, "herald.json");
  fs.writeFileSync(file, JSON.stringify(cfg));
  // HERALD_THREADS=N runs each node on N loops (CTest pusher_*_threads).
  // Without it, one loop, so that the plain suites cover one loop and their
  // _threads variants several (herald's own default is one per CPU).
  const threads = ["--threads", process.env.HERALD_THREADS || "1"];
  const proc = spawn(binary, ["serve", "--config", file, "--listen", "127.0.0.1:0", "--node-name", name, ...threads], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(proc);
  let log = "";
  proc.stderr.on("data", (d) => {
    log += d;
    if (process.env.HERALD_LOG) {
      process.stderr.write(`[${name}] ${d}`);
    }
  });
  const port = await new Promise((resolve, reject) => {
    let out = "";
    const t = setTimeout(() => reject(new Error(`herald did not start: ${log}`)), 10000);
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /listening on [^\n]*:(\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    proc.on("exit", (code) => reject(new Error(`herald exited ${code}: ${log}`)));
  });
  const node = { name, port, url: `http://127.0.0.1:${port}`, proc, log: () => log };
  node.exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve(code ?? signal)));
  if (redisPort) {
    await until(async () => (await fetch(`${node.url}/health`)).status === 200, 10000, "a healthy node");
  }
  return node;
}

/* Stops a node with SIGTERM, as an operator would: it must exit 0 within
 * 20 s, and its stderr must hold no sanitizer report (ASan, LeakSanitizer,
 * UBSan, and TSan, whose reports do not stop the process). */
export async function stopHerald(node) {
  node.proc.kill("SIGTERM");
  const code = await Promise.race([node.exited, sleep(20000).then(() => "timeout")]);
  const log = node.log();
  const bad = /(AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehaviorSanitizer|runtime error:)/.exec(log);
  check(code === 0, `herald ${node.name} exits 0 after SIGTERM`, `exit ${code}: ${log.slice(-300)}`);
  check(!bad, `herald ${node.name}'s stderr has no sanitizer report`,
    bad ? log.slice(Math.max(0, bad.index - 200), bad.index + 3000) : undefined);
}

/* A redis-server of our own, with no persistence; null when there is none. */
export async function startRedis() {
  const bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].find((p) => fs.existsSync(p));
  if (!bin) {
    return null;
  }
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-pusher-redis-"));
  tmpdirs.push(dir);
  const proc = spawn(bin, ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "",
    "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"], {
    stdio: "ignore",
  });
  children.push(proc);
  await until(() => new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => {
      s.end();
      resolve(true);
    });
    s.on("error", () => resolve(false));
  }), 10000, "redis-server");
  return { port, proc };
}

/* The auth endpoint of an application server, built on the `pusher` SDK:
 * POST /pusher/auth (channels; presence gets user x-user from the query)
 * and POST /pusher/user-auth (signin), form-encoded as pusher-js sends
 * them. Also serves static files for the browser test. */
export async function startAuthServer(PusherServer, statics = {}) {
  const sdk = new PusherServer({ appId: APP.id, key: APP.key, secret: APP.secret,
    encryptionMasterKeyBase64: ENCRYPTION_KEY, host: "127.0.0.1", port: 1 });
  const requests = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (req.method === "GET" && statics[url.pathname]) {
      const [type, body] = statics[url.pathname];
      res.writeHead(200, { "Content-Type": type, "Access-Control-Allow-Origin": "*" });
      res.end(body);
      return;
    }
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const form = new URLSearchParams(body);
      const socketId = form.get("socket_id");
      const user = url.searchParams.get("user") || "anon";
      requests.push(url.pathname);
      res.setHeader("Access-Control-Allow-Origin", "*");
      res.setHeader("Access-Control-Allow-Headers", "*");
      if (req.method === "OPTIONS") {
        res.writeHead(204);
        res.end();
        return;
      }
      try {
        let out;
        if (url.pathname === "/pusher/auth") {
          const channel = form.get("channel_name");
          if (url.searchParams.get("deny")) {
            res.writeHead(403);
            res.end("denied");
            return;
          }
          out = channel.startsWith("presence-")
            ? sdk.authorizeChannel(socketId, channel, { user_id: user, user_info: { name: `User ${user}` } })
            : sdk.authorizeChannel(socketId, channel);
          if (url.searchParams.get("forge")) {
            out.auth = out.auth.replace(/:.*/, ":" + "0".repeat(64));
          }
        } else if (url.pathname === "/pusher/user-auth") {
          out = sdk.authenticateUser(socketId, { id: user, user_info: { name: `User ${user}` } });
        } else {
          res.writeHead(404);
          res.end();
          return;
        }
        res.writeHead(200, { "Content-Type": "application/json" });
        res.end(JSON.stringify(out));
      } catch (e) {
        res.writeHead(500);
        res.end(String(e));
      }
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return { server, port, url: `http://127.0.0.1:${port}`, requests };
}

/* Receives webhooks: every request's headers and raw body. */
export async function startWebhookReceiver() {
  const got = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      got.push({ headers: req.headers, body });
      res.writeHead(200);
      res.end("ok");
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { server, got, url: `http://127.0.0.1:${server.address().port}/hooks` };
}

/* The Pusher server SDK pointed at a node. */
export function sdkFor(PusherServer, node, app = APP) {
  return new PusherServer({ appId: app.id, key: app.key, secret: app.secret, host: "127.0.0.1",
    port: node.port, useTLS: false, encryptionMasterKeyBase64: ENCRYPTION_KEY });
}

/* A request signed the way Pusher's server libraries sign them, with
 * overrides to break it on purpose: {timestamp, secret, bodyMd5}. */
export async function signedRequest(node, method, p, { body, params = {}, app = APP, timestamp, secret, bodyMd5 } = {}) {
  const full = `/apps/${app.id}${p}`;
  const q = { auth_key: app.key, auth_timestamp: timestamp ?? Math.floor(Date.now() / 1000), auth_version: "1.0", ...params };
  const text = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
  if (text !== undefined) {
    q.body_md5 = bodyMd5 ?? crypto.createHash("md5").update(text).digest("hex");
  }
  const qs = Object.keys(q).sort().map((k) => `${k}=${q[k]}`).join("&");
  const sig = crypto.createHmac("sha256", secret ?? app.secret).update(`${method}\n${full}\n${qs}`).digest("hex");
  const res = await fetch(`${node.url}${full}?${qs}&auth_signature=${sig}`, {
    method, body: text, headers: text ? { "Content-Type": "application/json" } : {},
  });
  return { status: res.status, text: await res.text() };
}

export function has(cmd) {
  return spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
}
