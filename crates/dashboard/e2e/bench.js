// `flotilla-bench dashboard`'s browser side: time to interactive of the
// fleet page and change -> visible on an open page. "Interactive": the
// page's row model holds every cluster (its count shows them all) and the
// first screen of rows is drawn and painted (the table is windowed: only
// the visible rows and a margin are in the DOM). Spoken to by crates/bench/src/dashboard.rs ("@@ " lines
// out, answers on stdin).
"use strict";
const { chromium } = require("playwright-core");
const path = require("path");
const readline = require("readline");

const URL = process.env.DASHBOARD_URL;
const CLUSTERS = Number(process.env.CLUSTERS);
const LOADS = Number(process.env.LOADS || 5);
const CHANGES = Number(process.env.CHANGES || 10);
const TIMEOUT = 120000;

const queued = [];
let waiting = null;
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (waiting) { const w = waiting; waiting = null; w(line); } else queued.push(line);
});
const nextLine = () => (queued.length ? Promise.resolve(queued.shift()) : new Promise((r) => { waiting = r; }));
const say = (message) => console.log(`@@ ${message}`);

async function load(context) {
  const page = await context.newPage();
  const start = Date.now();
  await page.goto(URL);
  await page.waitForFunction((n) => document.body.dataset.fleetRows === String(n) && document.querySelector("#fleet-count")?.textContent === `${n} clusters`, CLUSTERS, { timeout: TIMEOUT, polling: "raf" });
  await page.waitForFunction(() => window.dashboardTimings?.drawn !== undefined, null, { timeout: TIMEOUT });
  const t = await page.evaluate(() => window.dashboardTimings);
  // The first screen is really drawn: rows from the top to past the bottom of the viewport.
  const screen = await page.evaluate(() => {
    const rows = [...document.querySelectorAll("#fleet-body tr[data-name]")];
    return { first: rows[0]?.dataset.name, drawn: rows.length, bottom: rows.length ? rows[rows.length - 1].getBoundingClientRect().bottom : 0, viewport: window.innerHeight };
  });
  if (screen.first !== "c-0000" || screen.bottom < screen.viewport) throw new Error(`the first screen is not drawn: ${JSON.stringify(screen)}`);
  return { page, ms: Date.now() - start, snapshot: Math.round(t.snapshot), draw: Math.round(t.drawn - t.snapshot), bytes: t.bytes };
}

async function main() {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  // Warm-up: the browser's first start and the server's first snapshot.
  (await load(context)).page.close();
  for (let i = 0; i < LOADS; i++) {
    const { page, ms, snapshot, draw, bytes } = await load(context);
    say(`LOAD ${ms} ${snapshot} ${draw} ${bytes}`);
    await page.close();
  }
  const { page } = await load(context);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  // Windowed rows: scrolled to the end, the last clusters are drawn in view.
  const last = `c-${String(CLUSTERS - 1).padStart(4, "0")}`;
  await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
  await page.waitForFunction((n) => {
    const r = document.querySelector(`tr[data-name="${n}"]`)?.getBoundingClientRect();
    return r && r.top >= 0 && r.bottom <= window.innerHeight + 1;
  }, last, { timeout: TIMEOUT, polling: "raf" });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForSelector('tr[data-name="c-0000"]', { timeout: TIMEOUT });
  for (let i = 0; i < CHANGES; i++) {
    say("READY");
    const [verb, name, value, sentAt] = (await nextLine()).split(" ");
    if (verb !== "PATCHED") throw new Error(`unexpected ${verb}`);
    await page.waitForFunction(([n, v]) => (document.querySelector(`tr[data-name="${n}"]`)?.textContent || "").includes(v), [name, value], { timeout: TIMEOUT, polling: "raf" });
    say(`SEEN ${Date.now() - Number(sentAt)}`);
  }
  say("DONE");
  await browser.close();
}

main().then(() => process.exit(0), (e) => { console.log(`FAILED: ${e.stack || e}`); process.exit(1); });
