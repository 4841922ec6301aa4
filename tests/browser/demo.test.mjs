// demo.test.mjs - headless Chromium test of Herald's demo page.
//
//   node demo.test.mjs /path/to/herald [artifacts-dir]
//
// Starts `herald serve --listen 127.0.0.1:0 --demo`, opens the demo in two
// pages (two browser contexts: two people), chats between them, checks the
// presence list and the live ticker, keeps a screenshot, stops the server.
// Exit status: 0 all checks passed, 1 a check failed, 77 skipped (no
// Chromium or no playwright-core; a "SKIPPED:" line says why).

import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TOTAL_MS = 55_000; // the whole test, startup and teardown included
const STEP_MS = 10_000; // one wait for the page

const binary = process.argv[2];
const artifacts = path.resolve(process.argv[3] || path.join(ROOT, "build/test-artifacts"));

function skip(why) {
  console.log(`SKIPPED: ${why}`);
  process.exit(77);
}

if (!binary) {
  console.error("usage: node demo.test.mjs /path/to/herald [artifacts-dir]");
  process.exit(1);
}
if (!fs.existsSync(binary)) {
  console.error(`FAIL: no herald binary at ${binary}`);
  process.exit(1);
}
if (!fs.existsSync(CHROMIUM)) {
  skip(`no Chromium at ${CHROMIUM}`);
}
let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (e) {
  skip(`playwright-core cannot be loaded (${e.code || e.message}); run npm install in tests/browser`);
}

let passed = 0;
let failed = 0;
function check(ok, what, detail) {
  if (ok) {
    passed++;
    console.log(`ok   - ${what}`);
  } else {
    failed++;
    console.log(`FAIL - ${what}${detail ? `: ${detail}` : ""}`);
  }
  return ok;
}

/* Runs fn(); a thrown error (a timeout, say) is one failed check. */
async function step(what, fn) {
  try {
    const r = await fn();
    return check(r !== false, what, typeof r === "string" ? r : undefined);
  } catch (e) {
    return check(false, what, String(e && e.message ? e.message.split("\n")[0] : e));
  }
}

let server = null;
let browser = null;
let profile = null;
let serverLog = "";

async function cleanup() {
  if (browser) {
    await browser.close().catch(() => {});
    browser = null;
  }
  if (server && server.exitCode === null && server.signalCode === null) {
    const exited = new Promise((resolve) => server.once("exit", resolve));
    try {
      process.kill(server.pid, "SIGTERM");
    } catch {
      /* already gone */
    }
    const t = setTimeout(() => {
      try {
        process.kill(server.pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }, 3000);
    await exited;
    clearTimeout(t);
  }
  if (profile) {
    fs.rmSync(profile, { recursive: true, force: true });
    profile = null;
  }
}

function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

const deadline = setTimeout(async () => {
  check(false, `the whole test within ${TOTAL_MS / 1000} s`);
  if (serverLog) {
    console.log(`server output:\n${serverLog.slice(-2000)}`);
  }
  await cleanup();
  finish();
}, TOTAL_MS);

/* Starts the server and resolves with its port once it printed
 * "listening on 127.0.0.1:PORT" (on stdout or stderr). */
function startServer() {
  return new Promise((resolve, reject) => {
    // HERALD_THREADS=N runs the server on N loops (CTest browser_demo_threads).
    const threads = process.env.HERALD_THREADS ? ["--threads", process.env.HERALD_THREADS] : [];
    server = spawn(binary, ["serve", "--listen", "127.0.0.1:0", "--demo", ...threads], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let done = false;
    const timer = setTimeout(() => {
      if (!done) {
        done = true;
        reject(new Error("no 'listening on' line within 10 s"));
      }
    }, 10_000);
    const onData = (chunk) => {
      serverLog += chunk.toString();
      if (serverLog.length > 200_000) {
        serverLog = serverLog.slice(-100_000);
      }
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(serverLog);
      if (m && !done) {
        done = true;
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    server.stdout.on("data", onData);
    server.stderr.on("data", onData);
    server.on("error", (e) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(e);
      }
    });
    server.on("exit", (code, signal) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(new Error(`server exited early (${signal || code})`));
      }
    });
  });
}

async function main() {
  const port = await startServer();
  check(port > 0, `server started on port ${port}`);
  const base = `http://127.0.0.1:${port}/`;

  profile = fs.mkdtempSync(path.join(os.tmpdir(), "herald-chromium-"));
  // A fresh profile directory (Playwright passes it as --user-data-dir).
  // The pages share it, but each tab has its own sessionStorage, so its own
  // name and connection: two people.
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 20_000,
    viewport: { width: 1280, height: 860 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });

  const pageErrors = [];
  async function openPage(label) {
    const page = await browser.newPage();
    page.setDefaultTimeout(STEP_MS);
    page.on("pageerror", (e) => pageErrors.push(`${label}: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") {
        pageErrors.push(`${label} console: ${m.text()}`);
      }
    });
    await page.goto(base, { waitUntil: "domcontentloaded" });
    return page;
  }

  const alice = await openPage("page 1");
  const bob = await openPage("page 2");

  await step("page title and header", async () => {
    const title = await alice.title();
    const h1 = await alice.textContent("h1");
    return (/Herald/.test(title) && /Herald/.test(h1)) || `title ${title}, h1 ${h1}`;
  });

  for (const [page, label] of [[alice, "page 1"], [bob, "page 2"]]) {
    await step(`${label} connects via WebSocket`, async () => {
      await page.waitForSelector('#status[data-state="connected"][data-transport="websocket"]');
    });
  }

  await step("name field prefilled with a random name", async () => {
    const v = await alice.inputValue("#name");
    return v.trim().length > 0 || "empty";
  });

  const names = ["Alice Test", "Bob Test"];
  for (const [page, name] of [[alice, names[0]], [bob, names[1]]]) {
    await step(`sets the name ${name}`, async () => {
      await page.fill("#name", name);
      await page.press("#name", "Enter");
      // The new name reconnects; wait until it is live again.
      await page.waitForSelector('#status[data-state="connected"][data-transport="websocket"]');
      await page.waitForFunction(
        (n) => window.herald && window.herald.options.name === n && window.herald.state === "connected",
        name
      );
    });
  }

  await step("presence counts two people on both pages", async () => {
    for (const page of [alice, bob]) {
      await page.waitForFunction(() => document.querySelectorAll("#presence li").length >= 2);
    }
  });

  await step("presence lists both names on both pages", async () => {
    for (const page of [alice, bob]) {
      await page.waitForFunction((want) => {
        const text = document.querySelector("#presence")?.textContent || "";
        return want.every((n) => text.includes(n));
      }, names);
    }
  });

  const stamp = Date.now().toString(36);
  const messages = [
    [alice, bob, `hello from Alice ${stamp}`],
    [bob, alice, `hi Alice, Bob here ${stamp}`],
  ];
  for (const [from, to, text] of messages) {
    await step(`"${text}" reaches the other page`, async () => {
      await from.fill("#message", text);
      await from.press("#message", "Enter");
      await to.waitForFunction(
        (t) => Array.from(document.querySelectorAll("#messages .text")).some((el) => el.textContent === t),
        text
      );
      // And the sender sees its own message once.
      await from.waitForFunction(
        (t) => Array.from(document.querySelectorAll("#messages .text")).filter((el) => el.textContent === t).length === 1,
        text
      );
    });
  }

  await step("messages show the sender's name", async () => {
    const who = await bob.$$eval("#messages .message .who", (els) => els.map((e) => e.textContent));
    return who.includes(names[0]) || `names seen: ${who.join(", ")}`;
  });

  await step("a new page shows the history on join", async () => {
    const carol = await openPage("page 3");
    await carol.waitForFunction(
      (t) => Array.from(document.querySelectorAll("#messages .text")).some((el) => el.textContent === t),
      messages[0][2]
    );
    await carol.close();
  });

  await step("ticker: at least two updates", async () => {
    const start = Number(await alice.getAttribute("#ticker", "data-updates"));
    await alice.waitForFunction(
      (n) => Number(document.querySelector("#ticker").dataset.updates) >= n + 2,
      start
    );
    const rows = await alice.$$eval("#ticker-body tr[data-symbol]", (trs) =>
      trs.map((tr) => [tr.dataset.symbol, tr.querySelector(".price").textContent])
    );
    return (rows.length > 0 && rows.every(([s, p]) => s && /\d/.test(p))) || `rows: ${JSON.stringify(rows)}`;
  });

  await step("herald.js in SSE mode: one EventSource carries chat:lobby and ticker:prices", async () => {
    const page = await openPage("page 4");
    await page.evaluate(() => {
      const seen = { urls: [], chat: [], ticker: 0 };
      window.__sse = seen;
      class CountingEventSource extends EventSource {
        constructor(url) {
          super(url);
          seen.urls.push(url);
        }
      }
      const h = new window.Herald("/connection/websocket", {
        sse: "force",
        EventSource: CountingEventSource,
      });
      h.subscribe("chat:lobby", { onPublication: (p) => seen.chat.push(p.data && p.data.text) });
      h.subscribe("ticker:prices", { onPublication: () => seen.ticker++ });
      h.connect();
      window.__sseHerald = h;
    });
    await page.waitForFunction(() => window.__sseHerald.state === "connected");
    const text = `over SSE ${stamp}`;
    await alice.fill("#message", text);
    await alice.press("#message", "Enter");
    await page.waitForFunction(
      (t) => window.__sse.chat.includes(t) && window.__sse.ticker >= 2,
      text
    );
    const urls = await page.evaluate(() => window.__sse.urls);
    await page.evaluate(() => window.__sseHerald.disconnect());
    await page.close();
    const chans = urls.length === 1 ? new URL(urls[0]).searchParams.getAll("channel") : [];
    return (
      (urls.length === 1 && chans.join(" ") === "chat:lobby ticker:prices") ||
      `EventSources: ${JSON.stringify(urls)}`
    );
  });

  await step("screenshot", async () => {
    fs.mkdirSync(artifacts, { recursive: true });
    const file = path.join(artifacts, "demo.png");
    await alice.screenshot({ path: file, fullPage: true });
    const size = fs.statSync(file).size;
    console.log(`     screenshot: ${file} (${size} bytes)`);
    return size > 1000 || `only ${size} bytes`;
  });

  check(pageErrors.length === 0, "no JavaScript errors on the pages", pageErrors.join("; "));
}

try {
  await main();
} catch (e) {
  check(false, "test run", String(e && e.message ? e.message.split("\n")[0] : e));
  if (serverLog) {
    console.log(`server output:\n${serverLog.slice(-2000)}`);
  }
}
clearTimeout(deadline);
await cleanup();
finish();
