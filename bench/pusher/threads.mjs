// threads.mjs - Pusher fan-out on one loop and on two (--threads), side by
// side, beside herald's own protocol doing the same: S connections
// subscribed to one channel (a Pusher public channel, or a herald channel
// without history), P events posted through the HTTP API (POST
// /apps/{id}/events signed as the SDKs sign it, or POST /api/publish; up
// to C in flight), every delivery counted. Reports, per run, the server's CPU time (utime + stime
// from /proc, 10 ms ticks) per 1,000 deliveries, deliveries per second and
// the wall time; runs alternate between the thread counts (R rounds) so
// that the machine's noise falls on both, and the medians are printed.
//
//   node threads.mjs /path/to/herald [--subscribers S] [--events P]
//                    [--inflight C] [--rounds R] [--threads 1,2]
//                    [--protocols pusher,herald]
//
// The load generator (this process) shares the machine and is usually the
// limit of the throughput; the CPU column is the server's own cost.

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
  return i >= 0 ? args[i + 1] : def;
};
const S = Number(opt("subscribers", 1000));
const P = Number(opt("events", 300));
const C = Number(opt("inflight", 16));
const R = Number(opt("rounds", 3));
const THREADS = String(opt("threads", "1,2")).split(",").map(Number);
const PROTOCOLS = String(opt("protocols", "pusher,herald")).split(",");
const APP = { id: "1", key: "bench-key", secret: "bench-secret-0123456789abcdef" };
const APIKEY = "bench-api-key-0123456789";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TICK = 100; // clock ticks per second (getconf CLK_TCK on Linux)

async function startServer(threads) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-pusher-threads-"));
  const cfg = {
    log_level: "error", client_output_cap: 64 << 20, anonymous: true, api_key: APIKEY,
    namespaces: [{ name: "b" }],
    rate_limits: { connections_per_ip: { per_s: 0 } },
    pusher: { apps: [{ ...APP }] },
  };
  fs.writeFileSync(path.join(dir, "h.json"), JSON.stringify(cfg));
  const proc = spawn(binary, ["serve", "--config", path.join(dir, "h.json"), "--listen", "127.0.0.1:0",
    "--threads", String(threads)], { stdio: ["ignore", "pipe", "inherit"] });
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

function cpuTicks(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return Number(rest[11]) + Number(rest[12]); // utime, stime
}

function connect(kind, port, channel, count) {
  return new Promise((resolve, reject) => {
    const url = kind === "pusher" ? `ws://127.0.0.1:${port}/app/${APP.key}?protocol=7&client=bench&version=1`
      : `ws://127.0.0.1:${port}/connection/websocket`;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on("error", reject);
    ws.on("open", () => {
      if (kind === "herald") {
        ws.send(JSON.stringify({ id: 1, connect: {} }) + "\n" + JSON.stringify({ id: 2, subscribe: { channel } }));
      }
    });
    let ready = false;
    ws.on("message", (m) => {
      if (ready) {
        count();
        return;
      }
      const msg = JSON.parse(m);
      if (msg.event === "pusher:connection_established") {
        ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel } }));
      } else if (msg.event === "pusher_internal:subscription_succeeded" || (kind === "herald" && msg.id === 2)) {
        ready = true;
        resolve(ws);
      }
    });
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: C });

function post(kind, port, channel, i) {
  if (kind === "herald") {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: "127.0.0.1", port, method: "POST", path: "/api/publish", agent,
        headers: { "Content-Type": "application/json", Authorization: `apikey ${APIKEY}` } }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
      });
      req.on("error", reject);
      req.end(JSON.stringify({ channel, data: { i } }));
    });
  }
  const body = JSON.stringify({ name: "tick", channel, data: JSON.stringify({ i }) });
  const full = `/apps/${APP.id}/events`;
  const q = { auth_key: APP.key, auth_timestamp: Math.floor(Date.now() / 1000), auth_version: "1.0",
    body_md5: crypto.createHash("md5").update(body).digest("hex") };
  const qs = Object.keys(q).sort().map((k) => `${k}=${q[k]}`).join("&");
  const sig = crypto.createHmac("sha256", APP.secret).update(`POST\n${full}\n${qs}`).digest("hex");
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method: "POST", path: `${full}?${qs}&auth_signature=${sig}`,
      agent, headers: { "Content-Type": "application/json" } }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function run(kind, threads) {
  const srv = await startServer(threads);
  const channel = kind === "pusher" ? "fan" : "b:fan";
  let got = 0;
  const socks = [];
  for (let i = 0; i < S; i += 200) {
    const part = [];
    for (let j = i; j < Math.min(S, i + 200); j++) {
      part.push(connect(kind, srv.port, channel, () => got++));
    }
    socks.push(...(await Promise.all(part)));
  }
  await sleep(300);
  const want = S * P;
  const c0 = cpuTicks(srv.proc.pid);
  const t0 = process.hrtime.bigint();
  let next = 0;
  async function worker() {
    while (next < P) {
      await post(kind, srv.port, channel, next++);
    }
  }
  await Promise.all(Array.from({ length: C }, worker));
  const deadline = Date.now() + 60000;
  while (got < want && Date.now() < deadline) {
    await sleep(5);
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = (cpuTicks(srv.proc.pid) - c0) / TICK;
  for (const s of socks) s.terminate();
  srv.proc.kill("SIGKILL");
  fs.rmSync(srv.dir, { recursive: true, force: true });
  return { kind, threads, got, want, secs, cpu };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cases = PROTOCOLS.flatMap((k) => THREADS.map((t) => [k, t]));
const res = Object.fromEntries(cases.map(([k, t]) => [`${k} ${t}`, []]));
for (let r = 0; r < R; r++) {
  for (const [k, t] of cases) {
    const x = await run(k, t);
    res[`${k} ${t}`].push(x);
    console.log(`round ${r + 1} ${k} threads ${t}: ${x.got}/${x.want} deliveries in ${x.secs.toFixed(2)} s, ` +
      `server CPU ${x.cpu.toFixed(2)} s`);
  }
}
const perK = (xs) => median(xs.map((x) => (x.cpu * 1e6) / x.got));
console.log(`\n| protocol | threads | deliveries per run | server CPU per 1,000 deliveries (median) | ` +
  `vs one loop | deliveries/s (median) |`);
console.log("| --- | --- | --- | --- | --- | --- |");
for (const [k, t] of cases) {
  const xs = res[`${k} ${t}`];
  const one = res[`${k} ${THREADS[0]}`];
  console.log(`| ${k} | ${t} | ${xs[0].want} (${xs.length} runs) | ${perK(xs).toFixed(2)} ms | ` +
    `${(perK(xs) / perK(one)).toFixed(2)} | ${Math.round(median(xs.map((x) => x.got / x.secs)))} |`);
}
agent.destroy();
process.exit(cases.every(([k, t]) => res[`${k} ${t}`].every((x) => x.got === x.want)) ? 0 : 1);
