// bench.mjs - Pusher Channels beside herald's own protocol, in one run, on
// the same server binary and the same load generator:
//
//   1. memory per idle connection: a fresh `herald serve`, N connections
//      each subscribed to one of 100 public channels, the server's VmRSS
//      before and while they are held;
//   2. fan-out through the HTTP API: S subscribers of one channel, P events
//      posted (POST /apps/{id}/events, signed as Pusher's SDKs sign; and
//      herald's POST /api/publish) with C requests in flight; deliveries/s
//      from the first post to the last delivery, and the latency from each
//      post to each delivery.
//
//   node bench.mjs /path/to/herald [--connections N] [--subscribers S]
//                  [--events P] [--inflight C] [--rate R]
//
// The fan-out runs twice per protocol: paced at R events/s (default 50:
// latency without a queue), then as fast as the requests go (throughput).
// Latency is sampled on 20 subscribers, from the post to the delivery;
// every delivery is counted.
//
// Prints a Markdown table per part; run.sh puts them into
// docs/performance.md.

import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";

const args = process.argv.slice(2);
const binary = args[0];
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const N = opt("connections", 10000);
const S = opt("subscribers", 1000);
const P = opt("events", 1000);
const C = opt("inflight", 16);
const APP = { id: "1", key: "bench-key", secret: "bench-secret-0123456789abcdef" };
const APIKEY = "bench-api-key-0123456789";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startServer() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-pusher-bench-"));
  const cfg = {
    api_key: APIKEY, log_level: "error", client_output_cap: 64 << 20,
    namespaces: [{ name: "b" }],
    rate_limits: { connections_per_ip: { per_s: 0 } },
    max_channels_total: 1000000,
    pusher: { apps: [{ ...APP }] },
  };
  fs.writeFileSync(path.join(dir, "h.json"), JSON.stringify(cfg));
  const proc = spawn(binary, ["serve", "--config", path.join(dir, "h.json"), "--listen", "127.0.0.1:0"],
    { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      const m = /listening on [^\n]*:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.on("exit", (c) => reject(new Error(`herald exited ${c}`)));
  });
  return { proc, port, dir };
}

function rssKiB(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(s)[1]);
}

/* One connection, subscribed to channel; resolves once subscribed.
 * onEvent(data string or object) for each event of the channel; count()
 * instead, without parsing, when given (most subscribers of the fan-out:
 * parsing every message would make the generator the bottleneck). */
function connect(kind, port, channel, onEvent, count) {
  return new Promise((resolve, reject) => {
    const url = kind === "pusher" ? `ws://127.0.0.1:${port}/app/${APP.key}?protocol=7&client=bench&version=1`
      : `ws://127.0.0.1:${port}/connection/websocket`;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on("error", reject);
    ws.on("open", () => {
      if (kind === "herald") {
        ws.send(JSON.stringify({ id: 1, connect: {} }) + "\n" +
          JSON.stringify({ id: 2, subscribe: { channel } }));
      }
    });
    let ready = false;
    ws.on("message", (m) => {
      if (ready && count) {
        count();
        return;
      }
      const msg = JSON.parse(m);
      if (kind === "pusher") {
        if (msg.event === "pusher:connection_established") {
          ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel } }));
        } else if (msg.event === "pusher_internal:subscription_succeeded") {
          ready = true;
          resolve(ws);
        } else if (onEvent && msg.event === "tick") {
          onEvent(msg.data);
        }
      } else if (msg.id === 2) {
        ready = true;
        resolve(ws);
      } else if (onEvent && msg.push && msg.push.pub) {
        onEvent(msg.push.pub.data);
      }
    });
  });
}

/* The first `timed` connections time every event; the others count. */
async function openMany(kind, port, n, channelOf, onEvent, count, timed = n) {
  const socks = [];
  const batch = 200;
  for (let i = 0; i < n; i += batch) {
    const part = [];
    for (let j = i; j < Math.min(n, i + batch); j++) {
      part.push(connect(kind, port, channelOf(j), onEvent, j < timed ? null : count));
    }
    socks.push(...(await Promise.all(part)));
  }
  return socks;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: C });

function post(port, kind, channel, payload) {
  let pathq, body;
  const headers = { "Content-Type": "application/json" };
  if (kind === "pusher") {
    body = JSON.stringify({ name: "tick", channel, data: JSON.stringify(payload) });
    const full = `/apps/${APP.id}/events`;
    const q = { auth_key: APP.key, auth_timestamp: Math.floor(Date.now() / 1000), auth_version: "1.0",
      body_md5: crypto.createHash("md5").update(body).digest("hex") };
    const qs = Object.keys(q).sort().map((k) => `${k}=${q[k]}`).join("&");
    const sig = crypto.createHmac("sha256", APP.secret).update(`POST\n${full}\n${qs}`).digest("hex");
    pathq = `${full}?${qs}&auth_signature=${sig}`;
  } else {
    body = JSON.stringify({ channel, data: payload });
    pathq = "/api/publish";
    headers.Authorization = `apikey ${APIKEY}`;
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method: "POST", path: pathq, agent, headers }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end(body);
  });
}

function pct(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] : 0;
}

async function memory(kind) {
  const srv = await startServer();
  await sleep(300);
  const before = rssKiB(srv.proc.pid);
  const channel = (i) => (kind === "pusher" ? `idle-${i % 100}` : `b:idle-${i % 100}`);
  const socks = await openMany(kind, srv.port, N, channel, null, null);
  await sleep(1500);
  const held = rssKiB(srv.proc.pid);
  for (const s of socks) s.terminate();
  srv.proc.kill("SIGKILL");
  fs.rmSync(srv.dir, { recursive: true, force: true });
  return { kind, before, held, per: ((held - before) * 1024) / N };
}

/* rate: events per second to post (0: as fast as C requests allow). */
async function fanout(kind, rate) {
  const srv = await startServer();
  const channel = kind === "pusher" ? "fan" : "b:fan";
  let got = 0;
  const lat = [];
  const onEvent = (d) => {
    const t = typeof d === "string" ? JSON.parse(d).t : d.t;
    lat.push(Number(process.hrtime.bigint() / 1000n) - t);
    got++;
  };
  // Latency is sampled on 20 subscribers; every delivery is counted.
  const socks = await openMany(kind, srv.port, S, () => channel, onEvent, () => got++, 20);
  await sleep(300);
  const want = S * P;
  const t0 = process.hrtime.bigint();
  let next = 0;
  async function worker() {
    while (next < P) {
      const i = next++;
      if (rate > 0) {
        const due = Number(t0 / 1000n) + (i * 1e6) / rate;
        const now = Number(process.hrtime.bigint() / 1000n);
        if (due > now) {
          await sleep((due - now) / 1000);
        }
      }
      await post(srv.port, kind, channel, { t: Number(process.hrtime.bigint() / 1000n) });
    }
  }
  await Promise.all(Array.from({ length: C }, worker));
  const tPosted = process.hrtime.bigint();
  const deadline = Date.now() + 60000;
  while (got < want && Date.now() < deadline) {
    await sleep(5);
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const posted = Number(tPosted - t0) / 1e9;
  lat.sort((a, b) => a - b);
  for (const s of socks) s.terminate();
  srv.proc.kill("SIGKILL");
  fs.rmSync(srv.dir, { recursive: true, force: true });
  return { kind, paced: rate, got, want, secs, posts: P / posted, rate: got / secs, p50: pct(lat, 50) / 1000, p99: pct(lat, 99) / 1000 };
}

const m = [await memory("pusher"), await memory("herald")];
console.log(`### Memory per idle connection (${N} connections, each subscribed to one of 100 channels)\n`);
console.log("| protocol | server RSS before | RSS with the connections | bytes per connection |");
console.log("| --- | --- | --- | --- |");
for (const r of m) {
  console.log(`| ${r.kind === "pusher" ? "Pusher (`/app/{key}`)" : "herald"} | ${(r.before / 1024).toFixed(1)} MiB | ${(r.held / 1024).toFixed(1)} MiB | ${Math.round(r.per)} |`);
}
const PACED = opt("rate", 50);
const f = [await fanout("pusher", PACED), await fanout("herald", PACED), await fanout("pusher", 0),
  await fanout("herald", 0)];
console.log(`\n### Fan-out through the HTTP API (${S} subscribers of one channel, ${P} events, up to ${C} requests in flight)\n`);
console.log("| protocol | publish endpoint | events posted/s | deliveries | deliveries/s | latency p50 | latency p99 |");
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const r of f) {
  const name = r.kind === "pusher" ? "Pusher" : "herald";
  const pace = r.paced ? ` (paced at ${r.paced}/s)` : " (as fast as it goes)";
  console.log(`| ${name}${pace} | ${r.kind === "pusher" ? "`POST /apps/{id}/events`" : "`POST /api/publish`"} | ${Math.round(r.posts)} | ${r.got} of ${r.want} | ${Math.round(r.rate)} | ${r.p50.toFixed(1)} ms | ${r.p99.toFixed(1)} ms |`);
}
agent.destroy();
process.exit(f.every((r) => r.got === r.want) ? 0 : 1);
