// Drives the dashboard in Debian's Chromium (playwright-core, no browser
// download). Spoken to by crates/dashboard/tests/browser.rs: lines starting
// with "@@ " go to the test, the test's answers come on stdin.
"use strict";
const { chromium } = require("playwright-core");
const path = require("path");
const readline = require("readline");

const URL = process.env.DASHBOARD_URL;
const ARTEFACTS = process.env.ARTEFACTS;
const CLUSTERS = (process.env.CLUSTERS || "").split(",").filter(Boolean);
const TIMEOUT = 60000;

const queued = [];
let waiting = null;
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (waiting) { const w = waiting; waiting = null; w(line); } else queued.push(line);
});
const nextLine = () => (queued.length ? Promise.resolve(queued.shift()) : new Promise((r) => { waiting = r; }));
const say = (message) => console.log(`@@ ${message}`);
const check = (ok, message) => { if (!ok) throw new Error(`check failed: ${message}`); };
const shot = (page, name) => page.screenshot({ path: path.join(ARTEFACTS, name), fullPage: true });

// Waits until the main area's text contains every string; on timeout the
// failure shows what the page said.
async function waitForText(page, strings, what) {
  try {
    await page.waitForFunction((want) => want.every((w) => (document.querySelector("#main")?.textContent || "").includes(w)), strings, { timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`${what}: ${strings.join(", ")} not shown; the page says: ${await page.textContent("#main")}`);
  }
}

async function login(page, token) {
  await page.goto(URL);
  await page.waitForSelector("#token", { timeout: TIMEOUT });
  await page.fill("#token", token);
  await page.click("#login");
  for (const c of CLUSTERS) {
    await page.waitForSelector(`tr[data-name="${c}"][data-health="Healthy"]`, { timeout: TIMEOUT });
  }
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  // The dashboard serves HTTPS with a test CA's certificate.
  const contextOptions = { viewport: { width: 1440, height: 900 }, ignoreHTTPSErrors: true };
  const context = await browser.newContext(contextOptions);
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));

  // The fleet page renders the real clusters (as a read-only user).
  await login(page, process.env.VIEWER_TOKEN);
  check(CLUSTERS.length > 0 && (await page.$$("#fleet-body tr[data-name]")).length === CLUSTERS.length, "one row per cluster");
  check((await page.textContent("#fleet-count")) === `${CLUSTERS.length} clusters`, "the count is the fleet's");
  const m1 = await page.textContent(`tr[data-name="${CLUSTERS[0]}"]`);
  check(m1.includes("Pull") && /v1\.\d+/.test(m1) && m1.includes("cpu"), `row shows mode, version and bars: ${m1}`);
  await shot(page, "fleet.png");

  // A change of the fleet appears without a reload.
  await page.evaluate(() => { window.notReloaded = true; });
  say("READY change");
  check((await nextLine()) === "PATCHED", "the test patched the cluster");
  await page.waitForFunction(() => (document.querySelector('tr[data-name="m2"]')?.textContent || "").includes("dashboard-test=changed"), null, { timeout: TIMEOUT });
  check(await page.evaluate(() => window.notReloaded === true), "the page was not reloaded");
  say("SEEN change");

  // A forbidden action: the button is disabled by the user's access review;
  // forced anyway, the apiserver refuses it and its message is shown.
  const button = 'button.cordon[data-cluster="m2"]';
  await page.waitForFunction((sel) => document.querySelector(sel)?.disabled === true, button, { timeout: TIMEOUT });
  // Enabled and clicked at once: a live update may redraw the row.
  await page.$eval(button, (b) => { b.disabled = false; b.click(); });
  await page.click("#confirm-ok");
  await page.waitForSelector("#toast.error", { state: "visible", timeout: TIMEOUT });
  const refusal = await page.textContent("#toast");
  check(refusal.includes("403") && /forbidden/i.test(refusal) && refusal.includes("system:serviceaccount:default:viewer"), `the apiserver's refusal is shown: ${refusal}`);
  await shot(page, "forbidden.png");
  const direct = await page.evaluate(async () => {
    const r = await fetch("/api/actions/cordon", { method: "POST", headers: { "content-type": "application/json", "x-flotilla-action": "1" }, body: JSON.stringify({ cluster: "m2", cordon: true }) });
    return { status: r.status, body: await r.json() };
  });
  check(direct.status === 403 && /forbidden/i.test(direct.body.error), `a direct call is refused too: ${JSON.stringify(direct)}`);
  say("DONE forbidden");

  // An operator may cordon: confirmed, applied, and the taint shows live.
  await Promise.all([page.waitForNavigation(), page.click("#logout")]);
  await page.waitForSelector("#token", { timeout: TIMEOUT });
  await login(page, process.env.ADMIN_TOKEN);
  const allowed = 'button.cordon[data-cluster="m1"]:not([disabled])';
  await page.waitForSelector(allowed, { timeout: TIMEOUT });
  await page.click(allowed);
  await page.click("#confirm-ok");
  await page.waitForFunction(() => (document.querySelector('tr[data-name="m1"] .taints')?.textContent || "").includes("flotilla.io/cordoned"), null, { timeout: TIMEOUT });
  say("DONE cordon");
  check((await nextLine()) === "CHECKED", "the test checked the cordon");

  // The other pages render the fleet's real state.
  await page.goto(`${URL}#/cluster/m1`);
  await waitForText(page, ["Conditions", "Condition history", "Placed here by the fleet", "shop/web-deployment", "flotilla.io/cordoned"], "the cluster page");
  const historyTypes = await page.evaluate(() => {
    const heading = [...document.querySelectorAll("#main h3")].find((h) => h.textContent === "Condition history");
    return [...heading.nextElementSibling.querySelectorAll("tbody tr")].map((tr) => tr.cells[0].textContent);
  });
  check(["Available", "Joined", "MemberHealthy"].every((t) => historyTypes.includes(t)), `the condition history lists every type's transitions: ${historyTypes}`);
  const conditionTypes = await page.evaluate(() => {
    const heading = [...document.querySelectorAll("#main h3")].find((h) => h.textContent === "Conditions");
    return [...heading.nextElementSibling.querySelectorAll("tbody tr")].map((tr) => tr.cells[0].textContent);
  });
  check(["Available", "Joined", "MemberHealthy"].every((t) => conditionTypes.includes(t)), `the cluster's conditions are listed by type: ${conditionTypes}`);
  await shot(page, "cluster.png");
  // A change of this cluster appears on its page without a reload.
  await page.evaluate(() => { window.notReloaded = true; });
  check(!(await page.textContent("#main")).includes("dashboard-test/live"), "the taint is not there before the change");
  say("READY cluster");
  check((await nextLine()) === "PATCHED", "the test tainted the cluster");
  await waitForText(page, ["dashboard-test/live"], "the cluster page after the change");
  check(await page.evaluate(() => window.notReloaded === true), "the cluster page was not reloaded");
  say("SEEN cluster");
  await page.goto(`${URL}#/apps`);
  await waitForText(page, ["Deployment shop/web", "PropagationPolicy web", "m1", "m2", "Overrides applied", "shop/web-m1-label"], "the applications page");
  const overrides = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll("#main tbody tr")]
    .map((tr) => [tr.cells[0].textContent, tr.cells[5]?.textContent || ""])));
  check(overrides.m1 === "shop/web-m1-label" && overrides.m2 === "none", `the overrides applied per cluster: ${JSON.stringify(overrides)}`);
  await shot(page, "apps.png");
  await page.goto(`${URL}#/hosted`);
  await page.waitForFunction(() => document.querySelector("#main h2")?.textContent === "Hosted clusters", null, { timeout: TIMEOUT });
  say("DONE pages");

  // A user who may get m1 only and list bindings in shop only sees those.
  const scoped = await (await browser.newContext(contextOptions)).newPage();
  await scoped.goto(URL);
  await scoped.waitForSelector("#token", { timeout: TIMEOUT });
  await scoped.fill("#token", process.env.SHOPPER_TOKEN);
  await scoped.click("#login");
  await scoped.waitForSelector('tr[data-name="m1"]', { timeout: TIMEOUT });
  const scopedRows = await scoped.$$eval("#fleet-body tr[data-name]", (rows) => rows.map((r) => r.dataset.name));
  check(JSON.stringify(scopedRows) === '["m1"]', `the scoped user sees m1 only: ${scopedRows}`);
  const scopedReads = await scoped.evaluate(async () => {
    const get = async (u) => { const r = await fetch(u); return { status: r.status, body: await r.json() }; };
    return { apps: await get("/api/apps"), m2: await get("/api/clusters/m2"), fleet: await get("/api/fleet") };
  });
  const bindings = scopedReads.apps.body.rows.map((r) => r.binding);
  check(JSON.stringify(bindings) === '["shop/web-deployment"]', `the scoped user sees shop's binding only (not ops/api-deployment): ${JSON.stringify(scopedReads.apps)}`);
  check(scopedReads.m2.status === 403, `m2's page is refused to the scoped user: ${JSON.stringify(scopedReads.m2)}`);
  check(scopedReads.fleet.body.rows.map((r) => r.name).join() === "m1", `the fleet API lists m1 only: ${JSON.stringify(scopedReads.fleet)}`);
  await shot(scoped, "scoped.png");
  say("DONE scoped");

  // A user with a client certificate: signed in by it, no token; the
  // cordon their rights forbid is refused with the apiserver's message.
  const origin = new globalThis.URL(URL).origin;
  const certContext = await browser.newContext({ ...contextOptions, clientCertificates: [{ origin, certPath: process.env.CLIENT_CERT, keyPath: process.env.CLIENT_KEY }] });
  const cert = await certContext.newPage();
  cert.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  await cert.goto(URL);
  for (const c of CLUSTERS) await cert.waitForSelector(`tr[data-name="${c}"]`, { timeout: TIMEOUT });
  await cert.waitForFunction(() => (document.querySelector("#user")?.textContent || "").includes("alice (client certificate)"), null, { timeout: TIMEOUT });
  check(!(await cert.$("#token")), "no token was asked for");
  const certButton = 'button.cordon[data-cluster="m2"]';
  await cert.waitForFunction((sel) => document.querySelector(sel)?.disabled === true, certButton, { timeout: TIMEOUT });
  await cert.$eval(certButton, (b) => { b.disabled = false; b.click(); });
  await cert.click("#confirm-ok");
  await cert.waitForSelector("#toast.error", { state: "visible", timeout: TIMEOUT });
  const certRefusal = await cert.textContent("#toast");
  check(certRefusal.includes("403") && certRefusal.includes('User "alice"') && /cannot patch/.test(certRefusal), `the apiserver's refusal of alice is shown: ${certRefusal}`);
  await shot(cert, "certificate.png");
  say("DONE certificate");

  // The condition history on the cluster page, after a real transition.
  await page.goto(`${URL}#/cluster/m2`);
  await waitForText(page, ["Condition history"], "m2's page");
  say("READY history");
  check((await nextLine()) === "PATCHED", "the test un-accepted and re-accepted m2");
  await page.reload();
  await waitForText(page, ["NotAccepted"], "m2's condition history after the transition");
  const joinedHistory = await page.evaluate(() => {
    const heading = [...document.querySelectorAll("#main h3")].find((h) => h.textContent === "Condition history");
    return [...heading.nextElementSibling.querySelectorAll("tbody tr")].filter((tr) => tr.cells[0].textContent === "Joined").map((tr) => `${tr.cells[1].textContent} ${tr.cells[2].textContent}`);
  });
  check(joinedHistory[0] === "True Joined" && joinedHistory[1] === "False NotAccepted", `Joined's history, newest first: ${joinedHistory}`);
  await shot(page, "history.png");
  // m2 changed while the scoped user's page stayed open: its live rows
  // are gated too.
  const scopedAfter = await scoped.$$eval("#fleet-body tr[data-name]", (rows) => rows.map((r) => r.dataset.name));
  check(JSON.stringify(scopedAfter) === '["m1"]', `m2's live changes did not reach the scoped user: ${scopedAfter}`);
  say("DONE history");
  await browser.close();
}

main().then(() => process.exit(0), (e) => { console.log(`FAILED: ${e.stack || e}`); process.exit(1); });
