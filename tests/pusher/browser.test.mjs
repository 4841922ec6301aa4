// browser.test.mjs - pusher-js and laravel-echo (with its Pusher connector)
// in headless Chromium against `herald serve`, unmodified, loaded from
// their npm packages' browser builds. The page comes from the test's
// application server, which also authorizes channels with the `pusher`
// SDK, as a Laravel or Express backend would.
//
//   node browser.test.mjs /path/to/herald [artifacts-dir]
//
// Exit status: 0 passed, 1 a check failed, 77 skipped (no Chromium or no
// playwright-core; a "SKIPPED:" line says why).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import PusherServer from "pusher";
import {
  APP, check, cleanup, sdkFor, sleep, startAuthServer, startHerald, step, stopHerald, summary, until,
} from "./lib.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const binary = process.argv[2];
const artifacts = path.resolve(process.argv[3] || path.join(HERE, "../../build/test-artifacts"));

if (!binary || !fs.existsSync(binary)) {
  console.error("usage: node browser.test.mjs /path/to/herald [artifacts-dir]");
  process.exit(1);
}
if (!fs.existsSync(CHROMIUM)) {
  console.log(`SKIPPED: no Chromium at ${CHROMIUM}`);
  process.exit(77);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  console.log(`SKIPPED: playwright-core cannot be loaded (${e.code || e.message})`);
  process.exit(77);
}
setTimeout(() => {
  console.log("FAIL - the whole test took longer than 120 s");
  cleanup();
  process.exit(1);
}, 120_000).unref();

const PAGE = `<!doctype html><meta charset="utf-8"><title>herald pusher test</title>
<script src="/pusher.js"></script><script src="/echo.js"></script>
<body><pre id="out"></pre><script>
window.log = [];
function note(...a) { window.log.push(a); document.getElementById("out").textContent += JSON.stringify(a) + "\\n"; }
window.start = function (o) {
  const opts = { cluster: "local", wsHost: "127.0.0.1", wsPort: o.port, forceTLS: false,
    enabledTransports: ["ws"], disableStats: true };
  if (o.echo) {
    window.Pusher = Pusher;
    window.echo = new Echo.default({ broadcaster: "pusher", key: o.key, ...opts,
      authEndpoint: "/pusher/auth?user=" + o.user });
    return "echo";
  }
  window.pusher = new Pusher(o.key, { ...opts,
    channelAuthorization: { endpoint: "/pusher/auth?user=" + o.user, transport: "ajax" } });
  window.pusher.connection.bind("state_change", (s) => note("state", s.current));
  return "pusher";
};
</script>`;

const nm = path.join(HERE, "node_modules");
const auth = await startAuthServer(PusherServer, {
  "/": ["text/html", PAGE],
  "/pusher.js": ["application/javascript", fs.readFileSync(path.join(nm, "pusher-js/dist/web/pusher.min.js"))],
  "/echo.js": ["application/javascript", fs.readFileSync(path.join(nm, "laravel-echo/dist/echo.iife.js"))],
});
const node = await startHerald(binary, { origins: [auth.url] });
const sdk = sdkFor(PusherServer, node);

let browser = null;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "herald-pusher-chromium-"));
const pageErrors = [];

async function openPage(label, o) {
  const page = await browser.newPage();
  page.setDefaultTimeout(10_000);
  page.on("pageerror", (e) => pageErrors.push(`${label}: ${e.message}`));
  await page.goto(`${auth.url}/`, { waitUntil: "load" });
  await page.evaluate((opts) => window.start(opts), { port: node.port, key: APP.key, ...o });
  return page;
}

const logOf = (page) => page.evaluate(() => window.log);
async function waitLog(page, pred, what) {
  await until(async () => (await logOf(page)).find(pred), 8000, what);
}

try {
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, timeout: 20_000,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });

  // ---- pusher-js in the browser -------------------------------------------
  const p1 = await openPage("pusher-js u1", { user: "u1" });
  const p2 = await openPage("pusher-js u2", { user: "u2" });
  await step("pusher-js connects from Chromium", async () => {
    await waitLog(p1, (e) => e[0] === "state" && e[1] === "connected", "connected");
    await waitLog(p2, (e) => e[0] === "state" && e[1] === "connected", "connected");
  });
  await step("a public channel gets an event triggered with the pusher SDK", async () => {
    for (const p of [p1, p2]) {
      await p.evaluate(() => new Promise((resolve) => {
        const ch = window.pusher.subscribe("news");
        ch.bind("pusher:subscription_succeeded", resolve);
        ch.bind("headline", (d) => note("headline", d));
      }));
    }
    await sdk.trigger("news", "headline", { title: "Herald speaks Pusher" });
    await waitLog(p1, (e) => e[0] === "headline" && e[1].title === "Herald speaks Pusher", "headline p1");
    await waitLog(p2, (e) => e[0] === "headline", "headline p2");
  });
  await step("presence in the browser: each sees the other join and leave", async () => {
    await p1.evaluate(() => new Promise((resolve) => {
      const ch = window.pusher.subscribe("presence-room");
      ch.bind("pusher:subscription_succeeded", (m) => { note("members", m.count); resolve(); });
      ch.bind("pusher:member_added", (m) => note("added", m.id, m.info));
      ch.bind("pusher:member_removed", (m) => note("removed", m.id));
    }));
    await p2.evaluate(() => new Promise((resolve) => {
      const ch = window.pusher.subscribe("presence-room");
      ch.bind("pusher:subscription_succeeded", (m) => { note("members", m.count, Object.keys(m.members).sort()); resolve(); });
    }));
    await waitLog(p1, (e) => e[0] === "added" && e[1] === "u2" && e[2].name === "User u2", "u2 added");
    const l2 = await logOf(p2);
    const m = l2.find((e) => e[0] === "members");
    if (!m || m[1] !== 2 || m[2].join() !== "u1,u2") {
      return `p2 saw ${JSON.stringify(m)}`;
    }
    await p2.evaluate(() => window.pusher.unsubscribe("presence-room"));
    await waitLog(p1, (e) => e[0] === "removed" && e[1] === "u2", "u2 removed");
  });
  await step("client events between two browsers on a private channel", async () => {
    for (const p of [p1, p2]) {
      await p.evaluate(() => new Promise((resolve, reject) => {
        const ch = window.pusher.subscribe("private-chat");
        ch.bind("pusher:subscription_succeeded", resolve);
        ch.bind("pusher:subscription_error", (e) => reject(new Error(JSON.stringify(e))));
        ch.bind("client-msg", (d) => note("client-msg", d));
      }));
    }
    await p1.evaluate(() => window.pusher.channel("private-chat").trigger("client-msg", { text: "hi from u1" }));
    await waitLog(p2, (e) => e[0] === "client-msg" && e[1].text === "hi from u1", "client-msg");
    await sleep(200);
    return !(await logOf(p1)).find((e) => e[0] === "client-msg") || "the sender got its own event";
  });
  await p1.close();
  await p2.close();

  // ---- laravel-echo with its Pusher connector ------------------------------
  const e1 = await openPage("echo u1", { user: "u1", echo: true });
  const e2 = await openPage("echo u2", { user: "u2", echo: true });
  await step("Echo: a public channel listens to a broadcast event", async () => {
    for (const p of [e1, e2]) {
      await p.evaluate(() => new Promise((resolve) => {
        window.echo.channel("orders").listen(".OrderShipped", (e) => note("shipped", e))
          .subscribed(resolve);
      }));
    }
    await sdk.trigger("orders", "OrderShipped", { order: { id: 42 } });
    await waitLog(e1, (e) => e[0] === "shipped" && e[1].order.id === 42, "shipped e1");
    await waitLog(e2, (e) => e[0] === "shipped", "shipped e2");
  });
  await step("Echo: a namespaced event (App\\Events\\...)", async () => {
    await e1.evaluate(() => new Promise((resolve) => {
      window.echo.channel("billing").listen("InvoicePaid", (e) => note("paid", e)).subscribed(resolve);
    }));
    await sdk.trigger("billing", "App\\Events\\InvoicePaid", { amount: 9 });
    await waitLog(e1, (e) => e[0] === "paid" && e[1].amount === 9, "paid");
  });
  await step("Echo: private channel authorized by the auth endpoint, whisper between browsers", async () => {
    for (const p of [e1, e2]) {
      await p.evaluate(() => new Promise((resolve, reject) => {
        window.echo.private("team.1").listenForWhisper("typing", (e) => note("typing", e))
          .subscribed(resolve).error((e) => reject(new Error(JSON.stringify(e))));
      }));
    }
    await e1.evaluate(() => window.echo.private("team.1").whisper("typing", { who: "u1" }));
    await waitLog(e2, (e) => e[0] === "typing" && e[1].who === "u1", "whisper");
  });
  await step("Echo: join() sees here, joining and leaving", async () => {
    await e1.evaluate(() => new Promise((resolve) => {
      window.echo.join("chat.1")
        .here((users) => { note("here", users.map((u) => u.name)); resolve(); })
        .joining((u) => note("joining", u.name))
        .leaving((u) => note("leaving", u.name));
    }));
    await e2.evaluate(() => new Promise((resolve) => {
      window.echo.join("chat.1").here((users) => { note("here", users.map((u) => u.name).sort()); resolve(); });
    }));
    await waitLog(e1, (e) => e[0] === "joining" && e[1] === "User u2", "joining");
    const here2 = (await logOf(e2)).find((e) => e[0] === "here");
    if (!here2 || here2[1].join() !== "User u1,User u2") {
      return `e2 here ${JSON.stringify(here2)}`;
    }
    await e2.evaluate(() => window.echo.leave("chat.1"));
    await waitLog(e1, (e) => e[0] === "leaving" && e[1] === "User u2", "leaving");
  });
  await step("Echo: a refused private channel reports its error", async () => {
    const r = await e2.evaluate(() => new Promise((resolve) => {
      window.echo.connector.options.auth = {};
      const ch = window.echo.connector.pusher.subscribe("private-nope");
      ch.bind("pusher:subscription_error", (e) => resolve(e));
      // Authorize with a forged signature: the server must refuse it.
      ch.authorize = (socketId, cb) => cb(null, { auth: "herald-app-key:" + "0".repeat(64) });
      ch.subscriptionPending = false;
      ch.subscribe();
      setTimeout(() => resolve(null), 5000);
    }));
    return (r && r.status === 401) || JSON.stringify(r);
  });
  fs.mkdirSync(artifacts, { recursive: true });
  await e1.screenshot({ path: path.join(artifacts, "pusher-echo.png") }).catch(() => {});
  check(pageErrors.length === 0, "no errors in the pages", pageErrors.join("; "));
} catch (e) {
  check(false, "the test ran to its end", e.stack);
} finally {
  if (browser) {
    await browser.close().catch(() => {});
  }
  fs.rmSync(profile, { recursive: true, force: true });
  auth.server.close();
}
await stopHerald(node);
const rc = summary();
cleanup();
process.exit(rc);
