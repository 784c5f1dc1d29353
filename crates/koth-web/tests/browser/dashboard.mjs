// Drives the koth dashboard in headless Chromium with playwright-core. Run by
// crates/koth/tests/dashboard_browser.rs against a real `koth validator run`:
//
//   1. load KOTH_DASHBOARD_URL, record every request the page makes;
//   2. check the king (KOTH_EXPECT_KING), the queue (KOTH_EXPECT_QUEUED) and the charts;
//   3. print READY and wait for SUBMITTED on stdin (the test then commits KOTH_EXPECT_NEW);
//   4. wait until the page shows the new hotkey without a reload (live update over
//      /api/events), save a screenshot to KOTH_SCREENSHOT;
//   5. print RESULT <json>; exit non-zero on any failed check.
//
// Environment: KOTH_CHROMIUM (browser executable), KOTH_NODE_MODULES (where playwright-core is).

import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`dashboard.mjs: environment variable ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const url = need("KOTH_DASHBOARD_URL");
const chromiumPath = need("KOTH_CHROMIUM");
const modules = need("KOTH_NODE_MODULES");
const screenshot = need("KOTH_SCREENSHOT");
const expectKing = need("KOTH_EXPECT_KING");
const expectQueued = need("KOTH_EXPECT_QUEUED");
const expectNew = need("KOTH_EXPECT_NEW");

const require = createRequire(path.join(modules, "noop.js"));
const { chromium } = require("playwright-core");

const origin = new URL(url).origin;
const result = {
  ok: false,
  requests: 0,
  foreign_requests: [],
  king_digest: null,
  queue_has_expected: false,
  chart_points: 0,
  lineage_points: 0,
  live_update_seen: false,
  reloaded: null,
  updates: 0,
  console_errors: [],
  failed_responses: [],
  failures: [],
};

function fail(msg) {
  result.failures.push(msg);
}

const stdinLines = readline.createInterface({ input: process.stdin });
const submitted = new Promise((resolve) => {
  stdinLines.on("line", (line) => {
    if (line.trim() === "SUBMITTED") resolve();
  });
});

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1700 } });
  page.on("request", (req) => {
    result.requests += 1;
    const u = req.url();
    // data: URLs never leave the page; anything else must be this origin.
    if (!u.startsWith("data:") && new URL(u).origin !== origin) {
      result.foreign_requests.push(u);
    }
  });
  page.on("response", (resp) => {
    if (resp.status() >= 400) result.failed_responses.push(`${resp.status()} ${resp.url()}`);
  });
  page.on("console", (msg) => {
    if (msg.type() === "error") result.console_errors.push(msg.text());
  });
  page.on("pageerror", (err) => result.console_errors.push(String(err)));

  const resp = await page.goto(url, { waitUntil: "load" });
  if (!resp || resp.status() !== 200) fail(`GET ${url}: status ${resp && resp.status()}`);
  // A marker that only survives if the page is never reloaded.
  await page.evaluate(() => {
    window.__kothLoadedOnce = true;
  });

  result.king_digest = (await page.textContent("#king-digest"))?.trim() ?? null;
  if (result.king_digest !== expectKing) {
    fail(`king digest ${result.king_digest}, expected ${expectKing}`);
  }
  const queueText = (await page.textContent("#queue")) ?? "";
  const queueLinks = await page.$$eval("#queue a.hotkey", (as) => as.map((a) => a.title));
  result.queue_has_expected = queueLinks.includes(expectQueued);
  if (!result.queue_has_expected) fail(`queue lacks ${expectQueued}: ${queueText}`);
  result.chart_points = Number(await page.getAttribute("#duel-chart", "data-points"));
  if (!(result.chart_points > 0)) fail("the duel chart has no points");
  const polylines = await page.$$eval("#duel-chart polyline", (p) => p.length);
  if (polylines < 1) fail("the duel chart draws no line");
  result.lineage_points = Number(await page.getAttribute("#lineage-chart", "data-points"));
  if (!(result.lineage_points > 0)) fail("the lineage chart has no points");
  const history = (await page.textContent("#history")) ?? "";
  if (!history.includes("config_mismatch")) fail("history lacks the refused submission");
  if (!history.includes("differs from the king")) fail("history lacks the error's sentence");
  // The script connects to /api/events (same origin).
  await page.waitForFunction(
    () => document.getElementById("conn")?.classList.contains("on"),
    null,
    { timeout: 15000 },
  );

  // The page as first loaded (the hill mid-crown, the queue behind it).
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-loaded.png"), fullPage: true });
  console.log("READY");
  await submitted;

  // The new submission shows up (queue, current duel or history) without a reload.
  try {
    await page.waitForFunction(
      (hk) => Array.from(document.querySelectorAll("#live a.hotkey")).some((a) => a.title === hk),
      expectNew,
      { timeout: 45000, polling: 200 },
    );
    result.live_update_seen = true;
  } catch (e) {
    fail(`the page never showed ${expectNew}: ${e.message}`);
  }
  result.reloaded = !(await page.evaluate(() => window.__kothLoadedOnce === true));
  if (result.reloaded) fail("the page was reloaded");
  result.updates = Number(await page.evaluate(() => document.body.getAttribute("data-updates")));
  if (!(result.updates > 0)) fail("no live update was applied");

  await page.screenshot({ path: screenshot, fullPage: true });
  if (result.foreign_requests.length > 0) fail(`requests left the origin: ${result.foreign_requests}`);
  if (result.failed_responses.length > 0) fail(`failed responses: ${result.failed_responses}`);
  if (result.console_errors.length > 0) fail(`console errors: ${result.console_errors}`);
  result.ok = result.failures.length === 0;
} catch (e) {
  fail(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
  stdinLines.close();
}
console.log("RESULT " + JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
