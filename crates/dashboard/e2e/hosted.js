// The hosted-clusters page against a real hosted cluster (etcd and the
// control plane running as processes under node agents, status written by
// the real operators). Spoken to by crates/cli/tests/dashboard_hosted.rs
// with the same "@@ " line protocol as test.js.
"use strict";
const { chromium } = require("playwright-core");
const path = require("path");
const readline = require("readline");

const URL = process.env.DASHBOARD_URL;
const ARTEFACTS = process.env.ARTEFACTS;
const BACKUP_DIR = process.env.BACKUP_DIR;
const TIMEOUT = 120000;

const lines = readline.createInterface({ input: process.stdin });
const say = (message) => console.log(`@@ ${message}`);
const check = (ok, message) => { if (!ok) throw new Error(`check failed: ${message}`); };
const shot = (page, name) => page.screenshot({ path: path.join(ARTEFACTS, name), fullPage: true });

async function waitForText(page, strings, what) {
  try {
    await page.waitForFunction((want) => want.every((w) => (document.querySelector("#main")?.textContent || "").includes(w)), strings, { timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`${what}: ${strings.join(", ")} not shown; the page says: ${await page.textContent("#main")}`);
  }
}

// The rows of the table under the heading whose text starts with `title`.
const tableUnder = (page, title) => page.evaluate((title) => {
  const heading = [...document.querySelectorAll("#main h4")].find((h) => h.textContent.trim().startsWith(title));
  let table = heading?.nextElementSibling;
  while (table && table.tagName !== "TABLE") table = table.nextElementSibling;
  return table ? [...table.querySelectorAll("tbody tr")].map((tr) => [...tr.cells].map((c) => c.textContent.trim())) : null;
}, title);

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const page = await (await browser.newContext({ viewport: { width: 1440, height: 900 } })).newPage();
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  await page.goto(`${URL}#/hosted`);
  await waitForText(page, ["kok-test/c1", "Ready", "Components per machine", "Certificates", "etcd c1-etcd", "Machines"], "the hosted-clusters page");

  // The test has just killed the scheduler: its restarted instance turns
  // healthy on the open page once the operator's next probe says so.
  const healthyOnM1 = (instances, part) => instances.some(([name, machine, version, healthy]) => name.includes(part) && machine === "m1" && version.includes("1.37.2") && healthy === "yes");
  const parts = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"];
  const deadline = Date.now() + TIMEOUT;
  let instances = await tableUnder(page, "Components per machine");
  while (!parts.every((part) => healthyOnM1(instances || [], part)) && Date.now() < deadline) {
    await page.waitForTimeout(250);
    instances = await tableUnder(page, "Components per machine");
  }
  for (const part of parts) check(healthyOnM1(instances || [], part), `${part} runs healthy on m1: ${JSON.stringify(instances)}`);
  const certificates = await tableUnder(page, "Certificates");
  check(certificates.some(([name, , left]) => name === "apiserver" && /^\d+d$/.test(left)), `the apiserver certificate's time left: ${JSON.stringify(certificates)}`);
  const members = await tableUnder(page, "etcd");
  check(members.length === 1 && members[0][1] === "m1" && members[0][2].includes("leader") && members[0][3] === "yes" && /\d/.test(members[0][4]), `one etcd member on m1, the leader, healthy, with its database size: ${JSON.stringify(members)}`);
  const machines = await tableUnder(page, "Machines");
  check(machines.length === 1 && machines[0][0] === "m1" && machines[0][1] === "True" && /etcd-/.test(machines[0][3]) && /apiserver-/.test(machines[0][3]) && /restarts/.test(machines[0][3]), `m1 with its components and restarts: ${JSON.stringify(machines)}`);
  // The test killed the scheduler once: restarted, with its exit's log tail.
  try {
    await page.waitForFunction(() => [...document.querySelectorAll("#main td div")].some((d) => /^scheduler-.* restarts 1/.test(d.textContent) && d.querySelector("pre.log")), null, { timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`no restarted scheduler with its log tail: ${JSON.stringify(await tableUnder(page, "Machines"))}`);
  }
  await shot(page, "hosted.png");

  // An on-demand backup from the page: the real etcd operator takes it and
  // the page shows it Succeeded without a reload.
  await page.evaluate(() => { window.notReloaded = true; });
  await page.click("button.backup:not([disabled])");
  await page.fill('#confirm-fields input[name="machine"]', "m1");
  await page.fill('#confirm-fields input[name="path"]', BACKUP_DIR);
  await page.click("#confirm-ok");
  await page.waitForSelector("#toast:not(.error)", { state: "visible", timeout: TIMEOUT });
  say("BACKUP requested");
  try {
    await page.waitForFunction(() => [...document.querySelectorAll("#main td")].some((td) => td.textContent === "Succeeded"), null, { timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`the backup never showed Succeeded: ${JSON.stringify(await tableUnder(page, "etcd"))} ${await page.textContent("#main")}`);
  }
  check(await page.evaluate(() => window.notReloaded === true), "the page was not reloaded");
  await shot(page, "hosted-backup.png");
  say("DONE hosted");
  lines.close();
  await browser.close();
}

main().then(() => process.exit(0), (e) => { console.log(`FAILED: ${e.stack || e}`); process.exit(1); });
