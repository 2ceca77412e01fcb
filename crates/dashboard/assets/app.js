// Flotilla dashboard: hash routes, JSON from /api, live changes over
// server-sent events (/api/live). Hand-written, no build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const pill = (s) => `<span class="pill ${esc(s)}">${esc(s)}</span>`;

const state = { mode: "local", user: null, page: "fleet", arg: "", selector: "", rows: new Map(), order: [], source: null, canCordon: false, refetch: null };

// A GET is asked again after a network failure (a connection the browser
// reused as the server closed it): a page must not stay empty for one lost
// request. An HTTP error is an answer and is not retried, nor is a POST
// (an action must not run twice).
async function api(path, options = {}) {
  const retries = (options.method || "GET") === "GET" ? 4 : 0;
  let response;
  for (let attempt = 0; ; attempt++) {
    try {
      response = await fetch(path, { credentials: "same-origin", ...options });
      break;
    } catch (e) {
      if (attempt >= retries) throw e;
      await new Promise((resolve) => setTimeout(resolve, 300 * (attempt + 1)));
    }
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function action(path, payload) {
  return api(path, { method: "POST", headers: { "content-type": "application/json", "x-flotilla-action": "1" }, body: JSON.stringify(payload) });
}

async function can(verb, group, resource, namespace, name) {
  const q = new URLSearchParams({ verb, group, resource });
  if (namespace) q.set("namespace", namespace);
  if (name) q.set("name", name);
  try { return (await api(`/api/can?${q}`)).allowed; } catch { return false; }
}

function toast(text, isError) {
  const t = $("#toast");
  t.textContent = text;
  t.className = isError ? "error" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, isError ? 15000 : 4000);
}

// A confirmation dialog; resolves to the fields' values, or null.
function confirmAction(title, text, fields = []) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-fields").innerHTML = fields.map((f) => `<label>${esc(f.label)}<input name="${esc(f.name)}" value="${esc(f.value)}"></label>`).join("");
  return new Promise((resolve) => {
    dialog.onclose = () => {
      if (dialog.returnValue !== "ok") return resolve(null);
      const values = {};
      for (const input of dialog.querySelectorAll("#confirm-fields input")) values[input.name] = input.value;
      resolve(values);
    };
    dialog.returnValue = "";
    dialog.showModal();
  });
}

async function runAction(title, text, path, payload, fields) {
  const values = await confirmAction(title, text, fields);
  if (!values) return;
  try {
    await action(path, { ...payload, ...values });
    toast(`${title}: done`);
  } catch (e) {
    toast(`${title} refused (${e.status}): ${e.message}`, true);
  }
}

// ---- live channel ----------------------------------------------------------

function connectLive() {
  if (state.source) state.source.close();
  const q = new URLSearchParams({ selector: state.selector });
  const source = new EventSource(`/api/live?${q}`);
  state.source = source;
  source.onopen = () => { $("#live").className = "live on"; };
  source.onerror = () => { $("#live").className = "live off"; };
  source.addEventListener("snapshot", (e) => {
    const received = performance.now();
    state.rows = new Map(JSON.parse(e.data).rows.map((r) => [r.name, r]));
    sortOrder();
    if (state.page === "fleet") renderFleetTable();
    // For the benchmark: when the first snapshot came and was drawn.
    // "drawn": the frame after the rows went in (laid out and painted).
    if (!window.dashboardTimings) {
      const timings = { snapshot: received, bytes: e.data.length };
      window.dashboardTimings = timings;
      requestAnimationFrame(() => setTimeout(() => { timings.drawn = performance.now(); }));
    }
  });
  source.addEventListener("upsert", (e) => {
    const row = JSON.parse(e.data);
    state.rows.set(row.name, row);
    upsertFleetRow(row);
    if (state.page === "cluster" && state.arg === row.name) scheduleRefetch();
  });
  source.addEventListener("remove", (e) => {
    if (!state.rows.delete(e.data)) return;
    removeFleetRow(e.data);
  });
  source.addEventListener("changed", (e) => {
    if (state.page !== "fleet" && e.data !== "managedclusters") scheduleRefetch();
  });
}

// Coalesces bursts of changes into one refetch of the page's JSON.
function scheduleRefetch() {
  if (state.refetch) return;
  state.refetch = setTimeout(() => { state.refetch = null; route(true); }, 300);
}

// ---- fleet -----------------------------------------------------------------

function bars(row) {
  return row.bars.map((b) => `<div class="barline"><b>${esc(b.resource)}</b><progress class="bar${b.percent >= 90 ? " hot" : ""}" max="100" value="${b.percent}"></progress> ${esc(b.text)}</div>`).join("");
}

function fleetRowHtml(r) {
  const cordoned = r.taints.some((t) => t.startsWith("flotilla.io/cordoned"));
  const labels = Object.entries(r.labels).map(([k, v]) => `<span class="label">${esc(k)}=${esc(v)}</span>`).join("");
  return `<tr data-name="${esc(r.name)}" data-health="${esc(r.health)}">
    <td><a href="#/cluster/${encodeURIComponent(r.name)}">${esc(r.name)}</a><div>${labels}</div></td>
    <td>${esc(r.mode)}</td>
    <td title="${esc(r.healthReason)}">${pill(r.health)}</td>
    <td>${esc(r.version)}</td><td>${esc(r.nodes)}</td>
    <td>${bars(r)}</td>
    <td class="taints">${r.taints.map((t) => `<span class="taint">${esc(t)}</span>`).join("")}</td>
    <td>${esc(r.age)}</td>
    <td><button class="cordon" data-cluster="${esc(r.name)}" data-cordon="${cordoned ? "false" : "true"}" ${state.canCordon ? "" : "disabled title=\"your RBAC does not allow patching ManagedClusters\""}>${cordoned ? "Uncordon" : "Cordon"}</button></td>
  </tr>`;
}

// The fleet table is windowed: the whole row model stays in `state.rows`
// (names sorted in `state.order`), but only the rows on screen plus a
// margin are in the DOM, between two spacer rows whose heights stand for
// the others. Laying out and painting 1,000 rows with three bars each is
// what made the page slow to become interactive.
const WINDOW_MARGIN = 12; // rows drawn above and below the visible ones
const fleetWindow = { first: 0, last: 0, rowHeight: 0, scheduled: false };

function sortOrder() {
  state.order = [...state.rows.keys()].sort((a, b) => a.localeCompare(b));
}

// Index of `name` in the sorted order, or where it would go.
function orderIndex(name) {
  let lo = 0, hi = state.order.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (state.order[mid].localeCompare(name) < 0) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Which rows the viewport shows, from the table's place on the page.
function visibleRange(body) {
  const height = fleetWindow.rowHeight || 70;
  const top = body.getBoundingClientRect().top;
  const first = Math.max(0, Math.floor(-top / height));
  const last = Math.min(state.order.length, Math.ceil((window.innerHeight - top) / height));
  return [first, Math.max(first, last)];
}

function renderFleetTable(force = true) {
  const body = $("#fleet-body");
  if (!body) return;
  const n = state.order.length;
  const [visibleFirst, visibleLast] = visibleRange(body);
  // Redraw only when the visible rows are about to leave the drawn ones.
  const covered = fleetWindow.first <= Math.max(0, visibleFirst - 3) && fleetWindow.last >= Math.min(n, visibleLast + 3);
  if (!force && covered) return;
  const first = Math.max(0, visibleFirst - WINDOW_MARGIN);
  const last = Math.min(n, visibleLast + WINDOW_MARGIN);
  body.innerHTML = `<tr class="spacer"><td colspan="9"></td></tr>`
    + state.order.slice(first, last).map((name) => fleetRowHtml(state.rows.get(name))).join("")
    + `<tr class="spacer"><td colspan="9"></td></tr>`;
  fleetWindow.first = first;
  fleetWindow.last = last;
  if (last > first && !fleetWindow.rowHeight) {
    // Rows are about the same height (three bars each): measured once.
    const drawn = body.querySelectorAll("tr[data-name]");
    const height = (drawn[drawn.length - 1].getBoundingClientRect().bottom - drawn[0].getBoundingClientRect().top) / drawn.length;
    if (height > 0) fleetWindow.rowHeight = height;
  }
  sizeSpacers(body);
  updateCount();
}

// Spacer heights through CSSOM (the CSP forbids style attributes).
function sizeSpacers(body) {
  const height = fleetWindow.rowHeight || 70;
  body.firstElementChild.style.height = `${fleetWindow.first * height}px`;
  body.lastElementChild.style.height = `${(state.order.length - fleetWindow.last) * height}px`;
}

function scheduleWindow() {
  if (fleetWindow.scheduled) return;
  fleetWindow.scheduled = true;
  requestAnimationFrame(() => { fleetWindow.scheduled = false; renderFleetTable(false); });
}

function upsertFleetRow(row) {
  const body = $("#fleet-body");
  const known = state.order.length > 0 && state.order[orderIndex(row.name)] === row.name;
  if (!known) state.order.splice(orderIndex(row.name), 0, row.name);
  if (!body) return;
  if (!known) return renderFleetTable();
  const old = $(`tr[data-name="${CSS.escape(row.name)}"]`, body);
  if (!old) return; // not drawn: the model has it for when it scrolls in
  const template = document.createElement("tbody");
  template.innerHTML = fleetRowHtml(row);
  const tr = template.firstElementChild;
  tr.classList.add("flash");
  old.replaceWith(tr);
}

function removeFleetRow(name) {
  const i = orderIndex(name);
  if (state.order[i] === name) state.order.splice(i, 1);
  renderFleetTable();
}

// The count is the model's (every cluster matching the selector), not
// the drawn rows'.
function updateCount() {
  const n = state.order.length;
  const c = $("#fleet-count");
  if (c) c.textContent = `${n} cluster${n === 1 ? "" : "s"}`;
  document.body.dataset.fleetRows = String(n);
}

async function showFleet() {
  $("#main").innerHTML = `<h2>Fleet</h2>
    <div class="toolbar"><input id="selector" placeholder="label selector, e.g. topology.kubernetes.io/region=eu" value="${esc(state.selector)}">
    <span id="fleet-count" class="muted"></span></div>
    <table id="fleet"><thead><tr><th>Cluster</th><th>Mode</th><th>Health</th><th>Version</th><th>Nodes</th><th>Capacity / usage</th><th>Taints</th><th>Age</th><th></th></tr></thead>
    <tbody id="fleet-body"></tbody></table>`;
  renderFleetTable();
  $("#selector").addEventListener("change", (e) => { state.selector = e.target.value.trim(); connectLive(); });
  $("#fleet").addEventListener("click", (e) => {
    const b = e.target.closest("button.cordon");
    if (!b) return;
    const cordon = b.dataset.cordon === "true";
    runAction(`${cordon ? "Cordon" : "Uncordon"} ${b.dataset.cluster}`,
      cordon ? "New workloads will not be scheduled to this cluster (taint flotilla.io/cordoned:NoSchedule)." : "Remove the dashboard's cordon taint.",
      "/api/actions/cordon", { cluster: b.dataset.cluster, cordon });
  });
  const allowed = await can("patch", "cluster.flotilla.io", "managedclusters");
  if (allowed !== state.canCordon) {
    // Only the buttons change: no second drawing of every row.
    state.canCordon = allowed;
    for (const b of document.querySelectorAll("#fleet-body button.cordon")) {
      b.disabled = !allowed;
      b.title = allowed ? "" : "your RBAC does not allow patching ManagedClusters";
    }
  }
}

// ---- one cluster -----------------------------------------------------------

function table(headers, rows) {
  if (!rows.length) return `<p class="muted">none</p>`;
  return `<table><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;
}

async function showCluster(name) {
  const c = await api(`/api/clusters/${encodeURIComponent(name)}`);
  const r = c.row;
  $("#main").innerHTML = `<h2>${esc(r.name)} ${pill(r.health)}</h2>
    <div class="grid">
      <div class="card"><h3>Summary</h3>
        <p>Mode ${esc(r.mode)} · Kubernetes ${esc(r.version)} · nodes ${esc(r.nodes)} · age ${esc(r.age)}</p>
        <p class="muted">${esc(c.apiEndpoint)}</p>${bars(r)}
        <p>${r.taints.map((t) => `<span class="taint">${esc(t)}</span>`).join("")}</p>
        <p>${esc(r.healthReason)}</p></div>
      <div class="card"><h3>Inventory</h3><p>${c.nodeGroups.map(esc).join("<br>") || "<span class=muted>no node report</span>"}</p>
        <p class="muted">${c.apis.map(esc).join(", ")}</p></div>
    </div>
    <h3>Conditions</h3>${table(["Type", "Status", "Reason", "Message", "Since"], c.conditions.map((x) => [esc(x.type), pill(x.status), esc(x.reason), esc(x.message), esc(x.since)]))}
    <h3>Condition history</h3>${c.history.length ? table(["Type", "Status", "Reason", "Message", "Ago"], c.history.map((x) => [esc(x.type), pill(x.status), esc(x.reason), esc(x.message), esc(x.ago)])) : `<p class="muted">no transition recorded yet</p>`}
    <h3>Placed here by the fleet</h3>${table(["Binding", "Template", "Replicas", "Health", "Member's reason"], c.placed.map((p) => [esc(p.binding), esc(p.template), esc(p.replicas), pill(p.health), esc(p.reason)]))}
    <h3>Works</h3>${table(["Work", "Manifests", "Applied", "Available", "Message"], c.works.map((w) => [esc(w.name), esc(w.manifests), pill(w.applied), pill(w.available), esc(w.message)]))}
    <h3>Events</h3>${table(["Type", "Reason", "Object", "Message", "Count", "Age"], c.events.map((e) => [esc(e.type), esc(e.reason), esc(e.object), esc(e.message), esc(e.count), esc(e.age)]))}`;
}

// ---- applications ----------------------------------------------------------

async function showApps() {
  const { rows } = await api("/api/apps");
  const mayPause = rows.some((r) => r.rollout) ? await can("patch", "rollout.flotilla.io", "rollouts") : false;
  $("#main").innerHTML = `<h2>Applications</h2>` + (rows.length ? rows.map((a) => `<div class="card">
      <h3>${esc(a.template)} <span class="muted">· ${esc(a.replicas)} replicas · policy ${esc(a.policy || "none")} · binding ${esc(a.binding)}</span></h3>
      <p>${a.conditions.map(([t, s, m]) => `<span title="${esc(m)}">${esc(t)} ${pill(s)}</span>`).join(" ")}</p>
      ${a.moves.length ? `<p class="muted">${a.moves.map(esc).join("; ")}</p>` : ""}
      ${a.rollout ? `<p>Rollout ${esc(a.rollout.name)}: ${pill(a.rollout.phase || "Pending")} wave ${esc(a.rollout.wave)} ${esc(a.rollout.message)}
        <button class="pause" data-ns="${esc(a.rollout.namespace)}" data-name="${esc(a.rollout.name)}" data-paused="${a.rollout.paused ? "false" : "true"}" ${mayPause ? "" : "disabled"}>${a.rollout.paused ? "Resume" : "Pause"}</button></p>` : ""}
      ${table(["Cluster", "Replicas", "Applied", "Health", "Member's reason", "Overrides applied"], a.clusters.map((c) => [`<a href="#/cluster/${encodeURIComponent(c.name)}">${esc(c.name)}</a>`, esc(c.replicas), pill(c.applied ? "yes" : "no"), pill(c.health), esc(c.reason),
        c.overrides.length ? c.overrides.map((o) => `<span class="override">${esc(o)}</span>`).join(" → ") : `<span class="muted">none</span>`]))}
    </div>`).join("") : `<p class="muted">No application is propagated yet.</p>`);
  $("#main").onclick = (e) => {
    const b = e.target.closest("button.pause");
    if (!b) return;
    const paused = b.dataset.paused === "true";
    runAction(`${paused ? "Pause" : "Resume"} rollout ${b.dataset.name}`, paused ? "No next wave starts until resumed." : "The rollout continues with its next wave.",
      "/api/actions/pause-rollout", { namespace: b.dataset.ns, name: b.dataset.name, paused });
  };
}

// ---- hosted clusters -------------------------------------------------------

async function showHosted() {
  const { clusters } = await api("/api/hosted");
  const [mayBackup, mayRotate] = clusters.length ? await Promise.all([can("create", "kok.flotilla.io", "etcdbackups"), can("patch", "kok.flotilla.io", "hostedclusters")]) : [false, false];
  $("#main").innerHTML = `<h2>Hosted clusters</h2>` + (clusters.length ? clusters.map((h) => `<div class="card">
      <h3>${esc(h.namespace)}/${esc(h.name)} ${pill(h.phase)} <span class="muted">${esc(h.version)} · ${esc(h.endpoint)}</span>
        <button class="rotate" data-ns="${esc(h.namespace)}" data-name="${esc(h.name)}" ${mayRotate ? "" : "disabled"}>Rotate certificates</button></h3>
      ${h.upgrade ? `<p>Upgrade: ${esc(h.upgrade)}</p>` : ""}
      <p>${h.conditions.map((c) => `<span title="${esc(c.message)}">${esc(c.type)} ${pill(c.status)}</span>`).join(" ")}</p>
      <div class="grid">
      <div><h4>Components per machine</h4>${table(["Instance", "Machine", "Version", "Healthy"], h.instances.map((i) => [esc(i.name), esc(i.machine), esc(i.version), pill(i.healthy ? "yes" : "no")]))}</div>
      <div><h4>Certificates</h4>${table(["Certificate", "Expires", "Left"], h.certificates.map((c) => [esc(c.name), esc(c.notAfter), c.left === "expired" ? pill("expired") : esc(c.left)]))}</div>
      </div>
      ${h.etcd ? `<h4>etcd ${esc(h.etcd.name)} ${pill(h.etcd.phase)} ${esc(h.etcd.version)}
          <button class="backup" data-ns="${esc(h.namespace)}" data-cluster="${esc(h.etcd.name)}" data-machine="${esc(h.etcd.backupMachine)}" data-path="${esc(h.etcd.backupPath)}" ${mayBackup ? "" : "disabled"}>Back up now</button></h4>
        ${table(["Member", "Machine", "Leader", "Healthy", "DB size"], h.etcd.members.map((m) => [esc(m.name) + (m.learner ? " (learner)" : ""), esc(m.machine), m.leader ? "★ leader" : "", pill(m.healthy ? "yes" : "no"), esc(m.dbSize)]))}
        <p class="muted">next scheduled backup ${esc(h.etcd.nextBackup || "none")}</p>
        ${table(["Backup", "Phase", "Size", "Age", "Message"], h.etcd.backups.map((b) => [esc(b.name), pill(b.phase), esc(b.size), esc(b.age), esc(b.message)]))}` : ""}
      <h4>Machines</h4>${table(["Machine", "Ready", "Heartbeat", "Components"], h.machines.map((m) => [esc(m.name), pill(m.ready), esc(m.heartbeat),
        m.components.map((c) => `<div>${esc(c.name)} ${pill(c.state)} restarts ${esc(c.restarts)} ${esc(c.message)}${c.logTail.length ? `<pre class="log">${esc(c.logTail.join("\n"))}</pre>` : ""}</div>`).join("")]))}
    </div>`).join("") : `<p class="muted">No hosted cluster.</p>`);
  $("#main").onclick = (e) => {
    const r = e.target.closest("button.rotate");
    if (r) runAction(`Rotate certificates of ${r.dataset.name}`, "Reissues every leaf certificate; components restart one at a time.", "/api/actions/rotate-certs", { namespace: r.dataset.ns, name: r.dataset.name });
    const b = e.target.closest("button.backup");
    if (b) runAction(`Back up etcd ${b.dataset.cluster}`, "Takes a snapshot now (an EtcdBackup).", "/api/actions/etcd-backup", { namespace: b.dataset.ns, cluster: b.dataset.cluster },
      [{ name: "machine", label: "Destination machine", value: b.dataset.machine }, { name: "path", label: "Directory", value: b.dataset.path || "/var/lib/flotilla/backups" }]);
  };
}

// ---- login and routing -----------------------------------------------------

function showLogin(message) {
  $("#main").innerHTML = `<div class="card login"><h2>Log in to the hub</h2>
    <p class="muted">Paste your bearer token (e.g. <code>kubectl create token NAME</code>), or open the page with a client certificate the hub's client CA signed. Every request then acts as you, with your own rights.</p>
    <textarea id="token"></textarea><p><button id="login">Log in</button> <span id="login-error" class="muted">${esc(message || "")}</span></p></div>`;
  $("#login").onclick = async () => {
    try {
      const { user } = await api("/api/login", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: $("#token").value }) });
      state.user = user;
      start();
    } catch (e) { $("#login-error").textContent = e.message; }
  };
}

async function route(refetchOnly) {
  const [, page = "fleet", arg = ""] = location.hash.split("/");
  state.page = page || "fleet";
  state.arg = decodeURIComponent(arg);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.page === state.page);
  if (refetchOnly && state.page === "fleet") return;
  try {
    if (state.page === "cluster") await showCluster(state.arg);
    else if (state.page === "apps") await showApps();
    else if (state.page === "hosted") await showHosted();
    else await showFleet();
  } catch (e) {
    if (e.status === 401) return showLogin("Your session ended; log in again.");
    $("#main").innerHTML = `<p class="error">${esc(e.status || "")} ${esc(e.message)}</p>`;
  }
}

function start() {
  state.via = "token";
  showUser();
  connectLive();
  route();
}

async function boot() {
  window.addEventListener("hashchange", () => route());
  window.addEventListener("scroll", scheduleWindow, { passive: true });
  window.addEventListener("resize", scheduleWindow);
  $("#logout").onclick = async () => { await api("/api/logout", { method: "POST" }); location.reload(); };
  // The live channel opens while we ask who we are: the first rows do not
  // wait for that round trip (without a session it is refused, and closed).
  connectLive();
  route();
  const me = await api("/api/whoami");
  state.mode = me.mode;
  state.user = me.user;
  state.via = me.via;
  if (me.mode === "hub" && !me.user) {
    state.source.close();
    return showLogin();
  }
  showUser();
}

// Who the page acts as; a certificate user cannot log out (the browser
// presents the certificate on every connection).
function showUser() {
  const how = state.mode !== "hub" ? " (kubeconfig)" : state.via === "certificate" ? " (client certificate)" : "";
  $("#user").textContent = state.user ? `${state.user}${how}` : "";
  $("#logout").hidden = state.mode !== "hub" || state.via === "certificate";
}

boot();
