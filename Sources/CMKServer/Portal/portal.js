// The Sovereign Portal: plain JavaScript, no build step. Data is written with textContent
// only (never parsed as HTML), and the page runs under a strict Content-Security-Policy.
"use strict";

const api = "/api/v1";
let csrf = sessionStorage.getItem("cmk-csrf") || "";
let me = null;
let feed = null;
let refreshTimer = null;

const $ = (id) => document.getElementById(id);
const show = (id, visible) => { $(id).hidden = !visible; };
const el = (tag, text, className) => {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
};
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
const linkName = (link) => link.tenant + "/" + link.id.slice(0, 8);

async function call(method, path, body, extraHeaders) {
  const headers = Object.assign({ "Accept": "application/json" }, extraHeaders || {});
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(api + path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (_) { data = {}; }
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || ("HTTP " + response.status));
    error.status = response.status;
    error.code = data.error && data.error.code;
    error.probe = data.error && data.error.probe;
    // A wrong code at a step-up is `invalid_credentials` with the session still valid.
    if (response.status === 401 && me && error.code !== "invalid_credentials") { showLogin("Your session ended. Log in again."); }
    throw error;
  }
  return data;
}

/** A table cell; `label` is the column's name, shown beside the value when tables stack (tablets, phones). */
function cell(row, text, className) {
  const td = el("td", text === undefined || text === null || text === "" ? "—" : text, className);
  const header = row.closest("table") && row.closest("table").tHead.rows[0].cells[row.cells.length];
  if (header && header.textContent.trim()) td.dataset.label = header.textContent.trim();
  row.appendChild(td);
  return td;
}

/**
 * Re-renders a table body. Live updates re-render often (every heartbeat), so the control that
 * had the keyboard focus (`data-focus-key`) gets it back: a keyboard user is not thrown out.
 */
function fill(tableId, emptyId, rows, render) {
  const body = $(tableId).tBodies[0];
  const focused = body.contains(document.activeElement) ? document.activeElement.dataset.focusKey : undefined;
  body.replaceChildren();
  for (const item of rows) { const row = document.createElement("tr"); body.appendChild(row); render(row, item); }
  show(tableId, rows.length > 0);
  if (emptyId) show(emptyId, rows.length === 0);
  if (focused) { const again = body.querySelector("[data-focus-key='" + CSS.escape(focused) + "']"); if (again) again.focus(); }
}

/** A state as a badge: the word is always there (colour is never the only sign). */
function badge(state, text) { return el("span", text || state.replace(/_/g, " "), "badge state-" + state); }

const isAdmin = () => Boolean(me) && me.role === "security_admin";
const isOperator = () => Boolean(me) && me.role === "platform_operator";
/** People an operation takes under the gateway's policy (`lifecycle.approvals`), the requester included. */
const people = (operation) => (me && me.lifecycle && me.lifecycle.approvals && me.lifecycle.approvals[operation]) || 1;
const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
const peopleCount = (n) => (n === 1 ? "1 person" : n + " people");
const minutesText = (m) => (m % 1440 === 0 ? plural(m / 1440, "day") : m % 60 === 0 ? plural(m / 60, "hour") : plural(m, "minute"));
const linkPath = (link) => "/tenants/" + encodeURIComponent(link.tenant) + "/l1-links/" + link.id;

/**
 * Whether the session's last one-time code is recent enough (5 minutes) for a step that needs a
 * fresh one. The gateway decides, so ask it rather than keep a clock here.
 */
async function stepUpFresh() {
  try { const session = await call("GET", "/session"); me.stepUpFresh = session.stepUpFresh; return session.stepUpFresh; }
  catch (_) { return false; }
}

/** The step-up of the kill-switch, shared by every step that needs a fresh code. Throws the words to show. */
async function stepUp(code, nothingDone) {
  try {
    await call("POST", "/session/step-up", { totp: code });
  } catch (error) {
    throw new Error(error.code === "locked" ? "Too many wrong codes: the account is locked for a while. " + nothingDone
      : "The one-time code was not accepted (each code works once; wait for the next one). " + nothingDone);
  }
}

function showError(id, message) { $(id).textContent = message; show(id, Boolean(message)); }

// MARK: Views

const views = { "#status": "dashboard", "#onboard": "onboard", "#audit": "audit" };

function route() {
  if (!me) return;
  let view = views[location.hash] || "dashboard";
  if (view === "onboard" && !isAdmin()) view = "dashboard";   // auditors read, they do not link
  if (view === "audit" && isOperator()) view = "dashboard";    // the audit log is not the platform operator's to read
  for (const id of Object.values(views)) show(id, id === view);
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const title = $(view).querySelector("h2");
  if (document.activeElement && document.activeElement.closest("nav")) title.focus();
  if (view === "dashboard") refresh();
  if (view === "onboard") wizard.start();
  if (view === "audit") auditView.open();
}

// MARK: Dashboard

let dashboardNodes = [];
let dashboardLinks = [];
/** Every approval request the caller may see (`GET /approvals`), newest first. */
let approvals = [];

async function loadApprovals() {
  approvals = (await call("GET", "/approvals")).items;
  return approvals;
}

async function refresh() {
  try {
    // A platform operator may not read tenants, links or keystores (403): it is not asked for them.
    const operator = isOperator();
    const none = Promise.resolve({ items: [] });
    const [tenants, nodes, keystores] = await Promise.all([operator ? none : call("GET", "/tenants?limit=200"), call("GET", "/nodes"),
      operator ? none : call("GET", "/keystores"), loadApprovals()]);
    const links = [];
    for (const tenant of tenants.items) {
      const page = await call("GET", "/tenants/" + encodeURIComponent(tenant.id) + "/l1-links?limit=200");
      if (page.items.length === 0) links.push({ tenant: tenant.id });
      for (const link of page.items) links.push(link);
    }
    dashboardNodes = nodes.items;
    dashboardLinks = links.filter((l) => l.id);
    if (!operator) fill("links", "links-empty", links, renderLink);
    renderApprovals();
    fill("nodes", "nodes-empty", nodes.items, renderNode);
    const offline = nodes.items.filter((n) => !n.connected).length;
    $("nodes-offline").textContent = offline ? offline + " node(s) offline: they cannot receive a revocation until they reconnect, and they drop their keys by themselves when their lease ends. Check the node's process and its network path to the gateway." : "";
    show("nodes-offline", offline > 0);
    if (!operator) fill("keystores", "keystores-empty", keystores.items, renderKeystore);
    showError("dashboard-error", "");
    if (killSwitch.link) killSwitch.refresh();
    lifecycle.update();
  } catch (error) {
    if (error.status === 401) return;
    showError("dashboard-error", "Could not load the status: " + error.message);
  }
}

/** A small action button for a table row; `key` brings the keyboard focus back after a live re-render. */
function rowButton(text, className, key, label, onClick) {
  const button = el("button", text, className + " small");
  button.type = "button";
  button.dataset.focusKey = key;
  button.dataset.action = key.split(":")[0];
  if (label) button.setAttribute("aria-label", label);
  button.addEventListener("click", onClick);
  return button;
}

/** The state cell of a link: its badge, then what the state means for it (dates, epoch, proof). */
function linkStateCell(td, link) {
  const parts = [badge(link.state)];
  const line = (text, className) => parts.push(el("span", text, "reason" + (className ? " " + className : "")));
  if (link.state === "LINKED" && link.epoch > 1) line("epoch " + link.epoch + (link.restoredAt ? " · restored " + when(link.restoredAt) : ""));
  if (link.state === "REVOKED") {
    line("L2 key " + (link.l2 ? link.l2.state : "LOCKED") + " since " + when(link.revokedAt) + "; restorable with the L1 key");
  }
  if (link.state === "SHRED_SCHEDULED") line("shreds after " + when(link.shredAfter) + " unless cancelled", "warn-text");
  if (link.state === "SHREDDED") {
    line("L2 key destroyed " + when(link.shreddedAt || (link.l2 && link.l2.shreddedAt)) + " (irreversible)");
    if (link.l2 && link.l2.shreddedBindingSHA256) {
      const proof = el("span", undefined, "reason");
      proof.append(document.createTextNode("proof: SHA-256 of the destroyed binding "), el("code", link.l2.shreddedBindingSHA256, "proof-hash"));
      parts.push(proof);
    }
  }
  // Where a four-eyes request for this link stands.
  for (const operation of ["link.restore", "link.shred"]) {
    const request = link.state === "REVOKED" && openRequest(operation, link.id);
    if (request) line(operations[operation].noun + " " + (request.state === "APPROVED" ? "approved" : "requested by " + request.requestedBy) +
                      ": " + peopleSoFar(request), request.state === "APPROVED" ? "ok" : "");
  }
  td.replaceChildren(...parts);
}

function renderLink(row, link) {
  row.dataset.tenant = link.tenant;
  cell(row, link.tenant);
  if (!link.id) {
    cell(row, "no link yet");
    cell(row); cell(row); cell(row); cell(row);
    const actions = cell(row, "");
    if (!isAdmin()) return;
    const a = el("a", "Link a key", "button small"); a.href = "#onboard"; a.dataset.focusKey = "onboard:" + link.tenant;
    a.addEventListener("click", () => { wizard.preselect = link.tenant; });
    actions.replaceChildren(a);
    return;
  }
  row.dataset.link = link.id;
  row.dataset.state = link.state;
  cell(row, linkName(link), "mono");
  linkStateCell(cell(row, ""), link);
  cell(row, link.keyReference, "mono");
  const probe = link.lastProbe;
  const probeCell = cell(row, probe ? (probe.passed ? "passed " : "failed ") + when(probe.at) : undefined, probe ? (probe.passed ? "ok" : "bad") : "");
  if (probe && !probe.passed && probe.report && probe.report.failure) {
    probeCell.appendChild(el("span", probe.report.failure.reason + " Fix it on the token, then re-probe.", "reason"));
  }
  cell(row, probe && probe.report ? probe.report.latencyMilliseconds.toFixed(1) + " ms" : undefined);
  const actions = cell(row, "");
  const buttons = [];
  const admin = isAdmin();
  const name = linkName(link);
  const proof = (text) => rowButton(text, "secondary", "proof:" + link.id, "Revocation proof of " + name, () => killSwitch.progress(link));
  if (link.state === "LINKED" || link.state === "PENDING_VALIDATION") {
    if (admin) {
      const reprobe = rowButton("Re-probe", "secondary", "reprobe:" + link.id, "Re-probe " + name, async () => {
        reprobe.disabled = true;
        try { await call("POST", linkPath(link) + "/probe"); await refresh(); }
        catch (error) { showError("dashboard-error", "Re-probe failed: " + error.message); }
        finally { reprobe.disabled = false; }
      });
      buttons.push(reprobe, rowButton("Revoke…", "danger", "revoke:" + link.id, "Revoke " + name + " (kill-switch)", () => killSwitch.confirm(link)));
    }
    // A restored link keeps the proof of the revocation it came back from.
    if (link.epoch > 1) buttons.push(proof("Last revocation"));
  } else if (link.state === "REVOKED") {
    if (admin) {
      const restore = openRequest("link.restore", link.id), shred = openRequest("link.shred", link.id);
      const ready = (request) => request && request.state === "APPROVED" && participant(request);
      buttons.push(rowButton(ready(restore) ? "Restore now…" : "Restore…", ready(restore) ? "" : "secondary", "restore:" + link.id,
                             "Restore " + name, () => lifecycle.open("restore", { link })));
      buttons.push(rowButton(ready(shred) ? "Schedule shred now…" : "Schedule shred…", ready(shred) ? "danger" : "danger-outline", "shred:" + link.id,
                             "Schedule the shred of " + name, () => lifecycle.open("shred", { link })));
    }
    buttons.push(proof("Proof"));
  } else if (link.state === "SHRED_SCHEDULED") {
    if (admin) buttons.push(rowButton("Cancel shred…", "secondary", "cancel-shred:" + link.id, "Cancel the shred of " + name,
                                      () => lifecycle.open("cancel-shred", { link })));
    buttons.push(proof("Proof"));
  }
  // SHREDDED: nothing left to do; the proof of destruction is in the state cell and the audit log.
  const group = el("div", undefined, "actions"); group.style.marginTop = "0";
  group.append(...buttons);
  actions.replaceChildren(group);
}

function renderNode(row, node) {
  row.dataset.node = node.id;
  cell(row, node.id.slice(0, 8), "mono");
  cell(row, node.region);
  cell(row, node.connected ? "connected" : "offline", node.connected ? "ok" : "bad");
  cell(row, when(node.lastHeartbeatAt));
  cell(row, node.keysHeld);
  cell(row, node.leaseExpiresAt ? "ends " + when(node.leaseExpiresAt) : "no lease");
}

function renderKeystore(row, keystore) {
  cell(row, keystore.id);
  cell(row, ((providers[keystore.provider] || {}).name || keystore.provider) + " (" + keystore.profile + ")");
  const status = keystore.status || {};
  cell(row, [status.label, status.manufacturer, status.model].filter(Boolean).join(" · "));
  const health = cell(row, status.state, status.state === "available" ? "ok" : "bad");
  if (status.reason) health.appendChild(el("span", status.reason, "reason"));
}

// MARK: Approvals (four eyes)

/** The operations that can need more than one person, and whose duty each is. */
const operations = {
  "link.restore": { noun: "restore", title: "Restore", role: "security_admin", execute: "Restore now" },
  "link.shred": { noun: "shred", title: "Schedule shred", role: "security_admin", execute: "Schedule shred now" },
  "node.enrolment": { noun: "node enrolment", title: "Node enrolment", role: "platform_operator", execute: "Issue the token now" },
};
const roleNames = { security_admin: "security administrator", platform_operator: "platform operator", auditor: "auditor" };
const openStates = ["PENDING", "APPROVED"];
/** Revoked, and not shredded: the L2 can still come back with L1. */
const restorableStates = ["REVOKED", "SHRED_SCHEDULED"];

/** The open (pending or approved, unexpired) request for `operation` on `target`: the gateway keeps at most one. */
function openRequest(operation, target) {
  return approvals.find((r) => r.operation === operation && r.target === target && openStates.includes(r.state)) || null;
}

/**
 * The request a dialog about `operation` on `target` shows: the open one, else the newest if it
 * ended without being carried out (rejected, withdrawn, expired: why a new request is needed).
 */
function latestRequest(operation, target) {
  const newest = approvals.find((r) => r.operation === operation && r.target === target);
  return newest && newest.state !== "EXECUTED" ? newest : null;
}

/** The requester or one of the voters: those who may carry out an approved request. */
const participant = (request) => Boolean(me) && (request.requestedBy === me.username || request.votes.some((v) => v.approver === me.username));

/** May the caller vote: the operation's role, not the requester, not twice, while it is open. */
function mayVote(request) {
  const operation = operations[request.operation];
  return Boolean(me) && request.state === "PENDING" && operation && me.role === operation.role && request.requestedBy !== me.username &&
    !request.votes.some((v) => v.approver === me.username);
}

/** The requester counts as the first person; every approval adds one. */
const peopleSoFar = (request) => (request.approvals + 1) + " of " + request.requiredPeople + " people";

function requestTarget(request) {
  if (request.operation === "node.enrolment") return "region " + request.target;
  return (request.tenant || "") + "/" + request.target.slice(0, 8);
}

function requestWhat(request) {
  const operation = operations[request.operation];
  let text = operation ? operation.title : request.operation;
  if (request.parameters && request.parameters.waitingPeriodHours) text += " (waiting " + request.parameters.waitingPeriodHours + " h)";
  if (request.parameters && request.parameters.ttlSeconds) text += " (token valid " + Math.round(request.parameters.ttlSeconds / 60) + " min)";
  return text;
}

function votesText(request) {
  if (!request.votes.length) return "no vote yet";
  return request.votes.map((v) => v.approver + (v.decision === "APPROVE" ? " approved" : " rejected")).join(", ");
}

/** The link an approval is about, from the dashboard's list (a shallow stand-in when it is not loaded). */
function requestLink(request) {
  return dashboardLinks.find((l) => l.id === request.target) || { id: request.target, tenant: request.tenant, state: "REVOKED" };
}

function renderApprovals() {
  const open = approvals.filter((r) => openStates.includes(r.state));
  const closed = approvals.filter((r) => !openStates.includes(r.state)).slice(0, 10);
  fill("approvals", "approvals-empty", open, renderApproval);
  fill("approvals-history", "approvals-history-empty", closed, renderDecision);
  const policy = ["link.restore", "link.shred", "node.enrolment"].map((op) => operations[op].noun + " " + peopleCount(people(op)));
  const lifecyclePolicy = (me && me.lifecycle) || {};
  $("approvals-policy").textContent = "People each operation takes, the requester included: " + policy.join(", ") + ". " +
    "Others of the same duty approve; one rejection ends a request" +
    (lifecyclePolicy.approvalExpiryMinutes ? "; an unused request expires after " + minutesText(lifecyclePolicy.approvalExpiryMinutes) : "") + "." +
    (me && me.role === "auditor" ? " Auditors see every request and vote on none." : "");
}

function renderApproval(row, request) {
  row.dataset.approval = request.id;
  row.dataset.operation = request.operation;
  row.dataset.state = request.state;
  const what = cell(row, requestWhat(request));
  if (request.reason) what.appendChild(el("span", "“" + request.reason + "”", "reason"));
  cell(row, requestTarget(request), "mono");
  cell(row, request.requestedBy + (me && request.requestedBy === me.username ? " (you)" : ""));
  const count = cell(row, peopleSoFar(request));
  count.appendChild(el("span", votesText(request), "reason"));
  cell(row, "").replaceChildren(badge(request.state));
  cell(row, when(request.expiresAt));
  const actions = cell(row, "");
  const buttons = [];
  const operation = operations[request.operation] || {};
  const target = requestTarget(request);
  if (mayVote(request)) {
    buttons.push(rowButton("Approve…", "", "approve:" + request.id, "Approve the " + operation.noun + " of " + target,
                           () => lifecycle.open("approve", { request })));
    buttons.push(rowButton("Reject…", "danger-outline", "reject:" + request.id, "Reject the " + operation.noun + " of " + target,
                           () => lifecycle.open("reject", { request })));
  }
  if (request.state === "APPROVED" && participant(request) && me.role === operation.role) {
    const mode = { "link.restore": "restore", "link.shred": "shred", "node.enrolment": "enrol" }[request.operation];
    buttons.push(rowButton(operation.execute + "…", request.operation === "link.shred" ? "danger" : "", "execute:" + request.id,
                           operation.execute + ": " + target,
                           () => lifecycle.open(mode, { request, link: mode === "enrol" ? undefined : requestLink(request),
                                                        enrolment: mode === "enrol" ? { region: request.target } : undefined })));
  }
  if (me && request.requestedBy === me.username) {
    buttons.push(rowButton("Withdraw…", "secondary", "withdraw:" + request.id, "Withdraw the request for the " + operation.noun + " of " + target,
                           () => lifecycle.open("withdraw", { request })));
  }
  if (buttons.length === 0) {
    // Say why there is nothing to press, in the row itself.
    const why = me && request.requestedBy === me.username ? "waiting for another " + roleNames[operation.role]
      : me && me.role === "auditor" ? "read-only"
      : me && me.role !== operation.role ? "for a " + roleNames[operation.role]
      : request.votes.some((v) => me && v.approver === me.username) ? "you voted" : "";
    actions.replaceChildren(el("span", why, "hint"));
    return;
  }
  const group = el("div", undefined, "actions"); group.style.marginTop = "0";
  group.append(...buttons);
  actions.replaceChildren(group);
}

function renderDecision(row, request) {
  row.dataset.approval = request.id;
  row.dataset.state = request.state;
  cell(row, requestWhat(request));
  cell(row, requestTarget(request), "mono");
  cell(row, request.requestedBy);
  cell(row, votesText(request));
  const outcome = cell(row, "");
  outcome.replaceChildren(badge(request.state));
  if (request.state === "EXECUTED" && request.executedBy) outcome.appendChild(el("span", "by " + request.executedBy, "reason"));
  cell(row, when(request.executedAt || request.decidedAt || request.expiresAt));
}

// MARK: Node enrolment (platform operators)

async function enrolSubmit(event) {
  event.preventDefault();
  showError("enrol-error", "");
  const region = $("enrol-region").value.trim();
  const minutes = Number($("enrol-minutes").value);
  // The gateway's rule for a region in an approval request; the same here for a direct enrolment.
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(region)) return showError("enrol-error", "Name the node's region: 1–63 characters of a–z, 0–9 and '-' (for example eu-central-1).");
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) return showError("enrol-error", "A token lives 1 to 1440 minutes (a day).");
  if (people("node.enrolment") > 1) {
    return lifecycle.open("enrol", { enrolment: { region, ttlSeconds: minutes * 60 }, request: openRequest("node.enrolment", region) });
  }
  $("enrol-submit").disabled = true;
  try { await issueEnrolment(region, minutes * 60); }
  catch (error) { showError("enrol-error", "No token was issued: " + error.message); }
  finally { $("enrol-submit").disabled = false; }
}

/** `POST /nodes/enrolments`; the token is shown once, with the command that uses it. */
async function issueEnrolment(region, ttlSeconds, approval) {
  const body = { region };
  if (ttlSeconds) body.ttlSeconds = ttlSeconds;
  if (approval) body.approval = approval;
  const issued = await call("POST", "/nodes/enrolments", body);
  $("enrol-result-text").textContent = "A one-time token for a node in " + issued.region + ", valid until " + when(issued.expiresAt) + ". Copy it now: it is not shown again.";
  $("enrol-token").value = issued.token;
  $("enrol-command").textContent = "cmk node --gateway " + location.origin + " --region " + issued.region + " --data-dir DIR --enrolment-token-file FILE";
  show("enrol-result", true);
  $("enrol-token").focus();
  $("enrol-token").select();
  return issued;
}

/**
 * Coalesces change signals: at most one re-read per second however many nodes report, and
 * never more than a second late.
 */
let lastRefresh = 0;
function scheduleRefresh() {
  if (refreshTimer) return;
  const wait = Math.max(150, 1000 - (Date.now() - lastRefresh));
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    lastRefresh = Date.now();
    if (!$("dashboard").hidden) refresh();
    else if (killSwitch.link) killSwitch.refresh();
  }, wait);
}

function connectFeed() {
  if (feed) feed.close();
  feed = new EventSource(api + "/events/stream");
  feed.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "badge ok"; });
  feed.addEventListener("changed", scheduleRefresh);
  feed.addEventListener("error", () => { $("live").textContent = "reconnecting…"; $("live").className = "badge warn"; });
}

// MARK: Onboarding wizard

/** How each kind of keystore names its keys. */
const providers = {
  "pkcs11": { name: "PKCS#11 token", label: "Or paste a PKCS#11 URI (RFC 7512)", example: "pkcs11:object=tenant-l1",
              hint: "Without module or PIN attributes: the keystore's profile provides them." },
  "aws-kms": { name: "AWS KMS", label: "The key's ARN, alias ARN, alias/NAME or key id", example: "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-…",
               hint: "A symmetric ENCRYPT_DECRYPT key in the keystore's region." },
  "gcp-kms": { name: "GCP Cloud KMS", label: "The CryptoKey's resource name", example: "projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY",
               hint: "An ENCRYPT_DECRYPT key in the keystore's project; the primary version is used." },
  "azure-keyvault": { name: "Azure Key Vault", label: "The key's URI", example: "https://VAULT.vault.azure.net/keys/NAME",
                      hint: "In the keystore's vault; with or without a version (without: the current one)." },
  "kmip": { name: "KMIP server", label: "The key's unique identifier, as kmip:ID", example: "kmip:4f6e2a1c-0d3b-4c59-9a2f-1b2c3d4e5f60",
            hint: "An Active AES key on the keystore's KMIP server whose usage mask allows Encrypt and Decrypt." },
};

const wizard = {
  preselect: null,
  state: {},

  async start() {
    this.state = {};
    showError("wiz-error", "");
    show("wiz-restorable", false);
    this.step("provider");
    try {
      const [tenants, keystores] = await Promise.all([call("GET", "/tenants?limit=500"), call("GET", "/keystores")]);
      const select = $("wiz-tenant");
      select.replaceChildren();
      for (const tenant of tenants.items) { const o = el("option", tenant.id + (tenant.name ? " — " + tenant.name : "")); o.value = tenant.id; select.appendChild(o); }
      if (me.tenants === undefined) { const o = el("option", "A new tenant…"); o.value = ""; select.appendChild(o); }
      select.value = this.preselect && tenants.items.some((t) => t.id === this.preselect) ? this.preselect : (tenants.items.length ? tenants.items[0].id : "");
      this.preselect = null;
      show("wiz-new-tenant", select.value === "");
      const list = $("wiz-keystores");
      list.replaceChildren();
      keystores.items.forEach((keystore, index) => {
        const label = el("label", undefined, "choice");
        const radio = el("input"); radio.type = "radio"; radio.name = "wiz-keystore"; radio.value = keystore.id; radio.required = true;
        radio.checked = index === 0;
        const text = el("span");
        const status = keystore.status || {};
        const kind = providers[keystore.provider] || providers.pkcs11;
        radio.dataset.provider = keystore.provider;
        text.append(el("strong", keystore.id + " — " + kind.name + (status.label ? " " + status.label : "")),
                    el("span", (status.state === "available" ? "available" : "not available: " + (status.reason || status.state)) + " · " + keystore.profile,
                       status.state === "available" ? "reason" : "reason bad"));
        label.append(radio, text);
        list.appendChild(label);
      });
      show("wiz-keystores-empty", keystores.items.length === 0);
    } catch (error) { showError("wiz-error", "Could not load tenants and keystores: " + error.message); }
  },

  step(name) {
    for (const form of document.querySelectorAll("#onboard .step")) show(form.id, form.dataset.step === name);
    let past = true;
    for (const li of document.querySelectorAll(".steps li")) {
      if (li.dataset.step === name) { li.setAttribute("aria-current", "step"); past = false; li.classList.remove("done"); }
      else { li.removeAttribute("aria-current"); li.classList.toggle("done", past); }
    }
    const heading = document.querySelector("#onboard .step[data-step='" + name + "'] h3");
    if (heading && !$("onboard").hidden) heading.focus();
  },

  async chooseProvider(event) {
    event.preventDefault();
    showError("wiz-error", "");
    show("wiz-restorable", false);
    const keystore = document.querySelector("input[name='wiz-keystore']:checked");
    if (!keystore) return showError("wiz-error", "Choose the keystore that holds the L1 key. If none is listed, the gateway has no keystore configured.");
    let tenant = $("wiz-tenant").value;
    try {
      if (tenant === "") {
        tenant = $("wiz-tenant-id").value.trim();
        if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(tenant)) return showError("wiz-error", "A tenant id is 1–63 characters of a–z, 0–9 and '-', not starting or ending with '-'.");
        await call("POST", "/tenants", { id: tenant, name: $("wiz-tenant-name").value.trim() || tenant }, { "Idempotency-Key": crypto.randomUUID() });
        // Made: going back to this step shows it as an existing tenant, not a new one to create again.
        const option = el("option", tenant); option.value = tenant;
        $("wiz-tenant").insertBefore(option, $("wiz-tenant").lastChild);
        $("wiz-tenant").value = tenant;
        show("wiz-new-tenant", false);
      }
      const links = await call("GET", "/tenants/" + encodeURIComponent(tenant) + "/l1-links?limit=500");
      const active = links.items.find((l) => l.state === "LINKED" || l.state === "PENDING_VALIDATION");
      if (active) return showError("wiz-error", "Tenant " + tenant + " already has an active link (" + linkName(active) + "). Revoke it on the status page first; a tenant has one active L1 key.");
      const restorable = links.items.find((l) => restorableStates.includes(l.state));
      if (restorable) return this.restorable(restorable);
      // Only shredded links are left: a new link after a revocation needs a fresh code.
      this.state = { tenant, keystore: keystore.value, provider: keystore.dataset.provider || "pkcs11", restore: links.items.length > 0 };
      await this.loadKeys();
      this.step("key");
    } catch (error) { showError("wiz-error", error.message); }
  },

  async loadKeys() {
    const kind = providers[this.state.provider] || providers.pkcs11;
    $("wiz-uri").value = "";
    $("wiz-uri-label").textContent = kind.label;
    $("wiz-uri").placeholder = kind.example;
    $("wiz-uri-hint").textContent = kind.hint;
    const cloud = this.state.provider !== "pkcs11";
    show("wiz-keys-fieldset", true);
    $("wiz-keys-legend").textContent = cloud ? "Keys in " + kind.name : "Keys on the token";
    $("wiz-keys-id").textContent = cloud ? "State" : "Id";
    $("wiz-key-hint").textContent = cloud
      ? "Pick a key in " + kind.name + " for tenant " + this.state.tenant + ", or name it below: the gateway uses keystore " + this.state.keystore + "'s credentials and endpoint. Keys the probe cannot use as an L1 key are shown with the reason but cannot be chosen."
      : "Pick a key on keystore " + this.state.keystore + " for tenant " + this.state.tenant + ". Keys the probe cannot use as an L1 key are shown but cannot be chosen.";
    try {
      const keys = await call("GET", "/keystores/" + encodeURIComponent(this.state.keystore) + "/keys");
      // A token lists every object; a cloud KMS only keys (an Azure RSA key is a key pair).
      const candidates = cloud ? keys.items : keys.items.filter((k) => k.objectClass === "secret-key");
      fill("wiz-keys", "wiz-keys-empty", candidates, (row, key) => {
        const choose = cell(row, "");
        const radio = el("input"); radio.type = "radio"; radio.name = "wiz-key"; radio.value = key.uri; radio.disabled = !key.usableAsL1;
        radio.id = "wiz-key-" + row.rowIndex;
        radio.setAttribute("aria-label", "Use " + (key.label || key.idHex));
        radio.addEventListener("change", () => { $("wiz-uri").value = ""; });
        choose.replaceChildren(radio);
        cell(row, key.label, "mono");
        cell(row, cloud ? (key.state || "") : key.idHex, "mono");
        cell(row, (key.keyType || "").replace("CKK_", "") + (key.bits ? " " + key.bits : ""));
        const why = key.reason || (!key.canWrap ? "cannot wrap (CKA_WRAP false)" : !key.canUnwrap ? "cannot unwrap (CKA_UNWRAP false)" : "not an AES key");
        cell(row, key.usableAsL1 ? "yes" : "no — " + why, key.usableAsL1 ? "ok" : "bad");
      });
      $("wiz-keys-empty").textContent = cloud
        ? "No key is listed in " + kind.name + " for these credentials. Create a key there, or name one below."
        : "The token holds no secret key. Generate an AES-256 key with CKA_WRAP and CKA_UNWRAP on the token (for example with your HSM's tools), or paste a URI below.";
      if (keys.truncated) $("wiz-key-hint").textContent += " Only the first " + keys.items.length + " keys are shown: name another one below.";
    } catch (error) {
      fill("wiz-keys", "wiz-keys-empty", [], () => {});
      $("wiz-keys-empty").textContent = (cloud ? "The keys in " + kind.name + " cannot be listed (" : "The token's keys cannot be listed (") + error.message + "). You can still " + (cloud ? "name the key below." : "paste the key's PKCS#11 URI.");
    }
  },

  async chooseKey(event) {
    event.preventDefault();
    showError("wiz-error", "");
    const picked = document.querySelector("input[name='wiz-key']:checked");
    const key = $("wiz-uri").value.trim() || (picked && picked.value);
    if (!key) return showError("wiz-error", this.state.provider === "pkcs11" ? "Choose a key from the list or paste its PKCS#11 URI." : "Choose a key from the list or enter its name: " + (providers[this.state.provider] || providers.pkcs11).label + ".");
    this.state.key = key;
    this.step("validate");
    $("wiz-probe-summary").textContent = "Probing " + key + " …";
    $("wiz-probe-summary").className = "";
    $("wiz-checks").replaceChildren();
    $("wiz-confirm").disabled = true;
    show("wiz-restore", false);
    try {
      if (this.state.restore) this.state.codeNeeded = !(await stepUpFresh());
      const report = await call("POST", "/tenants/" + encodeURIComponent(this.state.tenant) + "/l1-probes",
                                { provider: this.state.provider, keystore: this.state.keystore, key });
      this.showReport(report);
    } catch (error) {
      if (error.code === "link_restorable") { $("wiz-probe-summary").textContent = ""; return this.restorableIn(this.state.tenant); }
      $("wiz-probe-summary").textContent = "The key could not be validated: " + error.message;
      $("wiz-probe-summary").className = "error";
    }
  },

  /**
   * A revoked link whose L2 can still come back stops a new link (409 link_restorable): the
   * tenant's data is under that L2. Say so, and lead to the restore (or the shred's cancel).
   */
  restorable(link) {
    const restorers = people("link.restore");
    const scheduled = link.state === "SHRED_SCHEDULED";
    $("wiz-restorable-text").textContent = "Tenant " + link.tenant + " has a revoked link, " + linkName(link) +
      (scheduled ? " (its shred is scheduled after " + when(link.shredAfter) + ")" : "") +
      ", whose L2 key — and the data encrypted under it — can still come back with its L1 key. A new key cannot be linked beside it: " +
      (scheduled ? "cancel the shred and restore the link" : "restore the link") +
      (restorers > 1 ? " (with the approval of " + (restorers - 1) + " other security administrator" + (restorers > 2 ? "s" : "") + ")" : "") +
      ", or have it shredded first.";
    $("wiz-restorable-go").textContent = (scheduled ? "Cancel the shred of " : "Restore ") + linkName(link) + "…";
    this.restorableLink = link;
    show("wiz-restorable", true);
    $("wiz-restorable-go").focus();
  },

  async restorableIn(tenant) {
    try {
      const links = await call("GET", "/tenants/" + encodeURIComponent(tenant) + "/l1-links?limit=500");
      const link = links.items.find((l) => restorableStates.includes(l.state));
      if (link) return this.restorable(link);
    } catch (_) { /* said below */ }
    showError("wiz-error", "Tenant " + tenant + " has a revoked link that can be restored: restore it on the status page, or shred it before linking a new key.");
  },

  goRestore() {
    const link = this.restorableLink;
    if (!link) return;
    location.hash = "#status";
    lifecycle.open(link.state === "SHRED_SCHEDULED" ? "cancel-shred" : "restore", { link });
  },

  showReport(report) {
    renderChecks("wiz-checks", report);
    if (report.passed) {
      $("wiz-probe-summary").textContent = "Validation passed: every check succeeded in " + report.latencyMilliseconds.toFixed(1) + " ms" + (report.mechanism ? " with " + report.mechanism : "") + ". Confirm to link the key.";
      $("wiz-probe-summary").className = "ok";
      $("wiz-confirm").disabled = false;
      show("wiz-restore", Boolean(this.state.restore && this.state.codeNeeded));
    } else {
      $("wiz-probe-summary").textContent = "Validation failed: " + (report.failure ? report.failure.reason : "a check did not pass") + ". Nothing was linked. Go back to choose another key, or fix the key on the token and validate again.";
      $("wiz-probe-summary").className = "error";
    }
  },

  async confirm(event) {
    event.preventDefault();
    showError("wiz-error", "");
    $("wiz-confirm").disabled = true;
    try {
      if (!$("wiz-restore").hidden) {
        const code = $("wiz-restore-totp").value.trim();
        if (!/^[0-9]{6}$/.test(code)) { $("wiz-confirm").disabled = false; return showError("wiz-error", "Enter the current six-digit code to link a key after a revocation."); }
        $("wiz-restore-totp").value = "";
        await stepUp(code, "Nothing was linked.");
        this.state.codeNeeded = false;
      }
      const link = await call("POST", "/tenants/" + encodeURIComponent(this.state.tenant) + "/l1-links",
                              { provider: this.state.provider, keystore: this.state.keystore, key: this.state.key }, { "Idempotency-Key": crypto.randomUUID() });
      const facts = $("wiz-result");
      facts.replaceChildren();
      for (const [term, value] of [["Tenant", link.tenant], ["Link", linkName(link) + " (" + link.id + ")"], ["State", link.state],
        ["L1 key", link.keyReference], ["L2Ref", link.l2 && link.l2.ref], ["L2 state", link.l2 && link.l2.state], ["Keystore", link.keystore]]) {
        facts.append(el("dt", term), el("dd", value, term === "L2Ref" ? "mono l2ref" : "mono"));
      }
      this.step("done");
    } catch (error) {
      $("wiz-confirm").disabled = false;
      if (error.code === "link_restorable") { $("wiz-confirm").disabled = true; return this.restorableIn(this.state.tenant); }
      if (error.probe) this.showReport(error.probe);
      if (error.code === "step_up_required") { this.state.codeNeeded = true; show("wiz-restore", true); $("wiz-restore-totp").focus(); }
      showError("wiz-error", error.code === "step_up_required" ? "Linking after a revocation needs a fresh one-time code: enter the current one. Nothing was linked."
        : !error.code ? error.message : "Linking failed: " + error.message);
    }
  },
};

// MARK: Kill-switch

const killSwitch = {
  link: null,
  timer: null,

  confirm(link) {
    this.link = link;
    $("ks-title").textContent = "Revoke " + linkName(link);
    $("ks-expected").textContent = linkName(link);
    const connected = dashboardNodes.filter((n) => n.connected).length;
    const facts = [["Tenant", link.tenant], ["L1 key", link.keyReference + " on " + link.keystore], ["L2Ref", link.l2 && link.l2.ref],
      ["Regional nodes", dashboardNodes.length + " enrolled, " + connected + " connected" + (connected < dashboardNodes.length ? " (offline ones drop the keys when their lease ends)" : "")]];
    $("ks-facts").replaceChildren(...facts.flatMap(([term, value]) => [el("dt", term), el("dd", value, "mono")]));
    const restorers = people("link.restore");
    $("ks-restore-note").textContent = "Coming back is deliberate: a restore with the key owner's L1 key" +
      (restorers > 1 ? ", which takes " + restorers + " security administrators (one asks, " + (restorers - 1) + " approve" + (restorers > 2 ? "" : "s") + ")" : "") + ". Until then the L2 key stays locked.";
    $("ks-name").value = ""; $("ks-totp").value = "";
    showError("ks-error", "");
    show("ks-form", true); show("ks-progress", false);
    this.validate();
    $("killswitch").showModal();
    $("ks-name").focus();
  },

  validate() {
    const ready = this.link && $("ks-name").value.trim() === linkName(this.link) && /^[0-9]{6}$/.test($("ks-totp").value.trim());
    $("ks-submit").disabled = !ready;
  },

  async submit(event) {
    event.preventDefault();
    this.validate();
    if ($("ks-submit").disabled) return;
    $("ks-submit").disabled = true;
    showError("ks-error", "");
    const link = this.link;
    const path = linkPath(link);
    try {
      await stepUp($("ks-totp").value.trim(), "Nothing was revoked.");
      $("ks-totp").value = "";
    } catch (error) {
      $("ks-totp").value = ""; $("ks-totp").focus();
      return showError("ks-error", error.message);
    }
    try {
      // No If-Match: a re-probe since the page loaded must not stand in the way of a revocation.
      await call("POST", path + "/revoke", undefined, { "Idempotency-Key": crypto.randomUUID() });
    } catch (error) {
      this.validate();
      return showError("ks-error", "Not revoked: " + error.message);
    }
    this.progress(link);
    refresh();
  },

  progress(link) {
    this.link = link;
    $("ks-title").textContent = "Revocation of " + linkName(link);
    show("ks-form", false); show("ks-progress", true);
    $("ks-state").textContent = "Revoked. Waiting for the regional nodes…";
    if (!$("killswitch").open) $("killswitch").showModal();
    $("ks-close").focus();
    this.refresh();
  },

  async refresh() {
    const link = this.link;
    if (!link || $("ks-progress").hidden) return;
    let progress;
    try {
      progress = await call("GET", "/tenants/" + encodeURIComponent(link.tenant) + "/l1-links/" + link.id + "/revocation");
    } catch (error) { $("ks-state").textContent = "Could not load the progress: " + error.message; return; }
    if (this.link !== link) return;
    const acked = progress.nodes.filter((n) => n.acknowledged).length;
    const total = progress.nodes.length;
    $("ks-bar").max = Math.max(total, 1); $("ks-bar").value = total ? acked : 1;
    const lastAck = Math.max(...progress.nodes.filter((n) => n.receivedAt).map((n) => Date.parse(n.receivedAt)));
    const took = total && Number.isFinite(lastAck) ? " within " + Math.max(0, lastAck - Date.parse(progress.revokedAt)) + " ms" : "";
    $("ks-state").replaceChildren(badge(progress.state), document.createTextNode(progress.state === "LOCKED"
      ? " Every node enrolled at the revocation (" + total + ") dropped the keys and signed a proof" + took + "." +
        (progress.linkState === "REVOKED" ? " The tenant's L2 key stays locked until the link is restored with the L1 key, or shredded."
          : " The link is " + progress.linkState.replace(/_/g, " ") + " now.")
      : " " + acked + " of " + total + " nodes acknowledged; waiting for " + progress.missing.map((n) => n.slice(0, 8)).join(", ") + "."));
    $("ks-state").dataset.state = progress.state;
    $("ks-exposure").textContent = progress.exposureBound
      ? "Worst-case exposure: a node that has not acknowledged drops the keys by itself when its lease ends, at the latest " + when(progress.exposureBound) + "."
      : "Worst-case exposure: no node holds a lease on this tenant's keys any more (revoked " + when(progress.revokedAt) + ").";
    const rows = [];
    for (const node of progress.nodes) {
      let verified = null;
      if (node.acknowledged) {
        try {
          const statement = JSON.parse(node.statement);
          verified = statement.node === node.node && statement.link === progress.link && statement.event === progress.event &&
            await AuditVerify.verifyEd25519(node.signingKey, node.signature, node.statement);
        } catch (_) { verified = false; }
      }
      rows.push({ node, verified });
    }
    const signed = progress.nodes.filter((n) => n.acknowledged).map((n) => ({ node: n.node, statement: n.statement, signature: n.signature, signingKey: n.signingKey }));
    $("ks-proofs-json").textContent = JSON.stringify({ link: progress.link, event: progress.event, revokedAt: progress.revokedAt, acknowledgements: signed }, null, 2);
    show("ks-proofs", signed.length > 0);
    fill("ks-nodes", "ks-nodes-empty", rows, (row, { node, verified }) => {
      row.dataset.node = node.node;
      cell(row, node.node.slice(0, 8), "mono");
      cell(row, node.region);
      cell(row, node.acknowledged ? "dropped " + when(node.receivedAt) : "waiting", node.acknowledged ? "ok" : "warn");
      cell(row, node.acknowledged ? node.keysDropped : undefined);
      cell(row, node.acknowledged ? (verified ? "verified (Ed25519, checked in this browser)" : "DOES NOT VERIFY") : "—", verified ? "ok signature" : node.acknowledged ? "bad signature" : "");
    });
  },

  close() {
    this.link = null;
    $("killswitch").close();
  },
};

// MARK: Restore, shred and the four-eyes steps

/** A probe report's checks as a list, passed or failed with the detail (the wizard's and the restore's). */
function renderChecks(listId, report) {
  const list = $(listId);
  list.replaceChildren();
  for (const check of report.checks || []) {
    const li = el("li", undefined, check.passed ? "pass" : "fail");
    li.dataset.check = check.name;
    li.append(el("span", check.name.replace(/_/g, " "), "name"), el("span", (check.passed ? "passed — " : "failed — ") + check.detail));
    list.appendChild(li);
  }
}

/** A lifecycle step's failure in words; the gateway's own message where it names the detail. */
function lifecycleFailure(error) {
  const reason = error.probe && error.probe.failure && error.probe.failure.reason;
  switch (error.code) {
    case "probe_failed": return "The L1 key did not pass its probe, so nothing changed and the link stays revoked: " + (reason || error.message) +
      ". The checks are listed below; fix the key or the keystore's access, then try again.";
    case "l1_key_mismatch": return "The L1 key the link names does not open the tenant's sovereign binding: it is not the key the L2 key was bound to " +
      "(was it replaced by another key with the same name?). Nothing changed; restoring needs the original key.";
    case "approval_required": return "This needs other people's approval first. " + error.message;
    case "approval_expired": return "The approval request expired before it was used: request it again.";
    case "approval_closed": return "The approval request is closed (rejected, withdrawn or already used). " + error.message;
    case "approval_mismatch": return "That approval is for another operation or target. " + error.message;
    case "approval_pending": return "A request for this is already open: it is shown under Approvals.";
    case "self_approval": return "You made this request: another person of the same duty must approve or reject it.";
    case "already_voted": return "You have already voted on this request.";
    case "shred_scheduled": return "A shred is scheduled for this link: cancel the shred first, then restore it.";
    case "link_shredded": return "The link was shredded: its L2 key is destroyed and cannot come back.";
    default: return error.message;
  }
}

function requestStatus(request) {
  const operation = operations[request.operation] || {};
  const mine = me && request.requestedBy === me.username;
  switch (request.state) {
    case "PENDING": return (mine ? " Waiting for another " + roleNames[operation.role] + " to approve: " : " Requested by " + request.requestedBy + ": ") +
      peopleSoFar(request) + "; expires " + when(request.expiresAt) + ".";
    case "APPROVED": return " Approved: " + peopleSoFar(request) + ". " + (participant(request) ? "You can carry it out" : request.requestedBy + " or an approver carries it out") +
      " until " + when(request.expiresAt) + ".";
    case "REJECTED": return " Rejected (" + votesText(request) + "). Request it again if it is still needed.";
    case "CANCELLED": return " Withdrawn by " + request.requestedBy + ".";
    case "EXPIRED": return " Expired unused at " + when(request.expiresAt) + ".";
    case "EXECUTED": return " Carried out by " + request.executedBy + " at " + when(request.executedAt) + ".";
    default: return " " + request.state;
  }
}

/**
 * One dialog for every step past the kill-switch. `mode`: restore, shred, cancel-shred (on a
 * link), approve, reject, withdraw (on a request), enrol (a node enrolment that needs approval).
 * When the policy needs more than one person, restore, shred and enrol first make an approval
 * request (or show the open one) and follow it live; once it is approved, its requester or an
 * approver carries the operation out from here with the request's id.
 */
const lifecycle = {
  mode: null,
  link: null,
  request: null,
  enrolment: null,
  codeNeeded: false,
  creates: false,
  finished: false,
  busy: false,

  /** The approval operation the dialog is about (none for cancelling a shred). */
  operation() {
    if (this.request) return this.request.operation;
    return { restore: "link.restore", shred: "link.shred", enrol: "node.enrolment" }[this.mode] || null;
  },

  target() { return this.mode === "enrol" ? this.enrolment && this.enrolment.region : this.link && this.link.id; },

  async open(mode, { link, request, enrolment } = {}) {
    Object.assign(this, { mode, link: link || null, request: request || null, enrolment: enrolment || null, finished: false, busy: false });
    const policy = (me && me.lifecycle) || {};
    $("lc-totp").value = ""; $("lc-reason").value = "";
    $("lc-hours").min = String(policy.shredWaitingPeriodHours || 1);
    $("lc-hours").value = String(policy.shredWaitingPeriodHours || 168);
    $("lc-hours-hint").textContent = "At least " + (policy.shredWaitingPeriodHours || 1) + " hours (the gateway's minimum), at most 720 (30 days). Until then one person can cancel it.";
    showError("lc-error", ""); show("lc-checks", false); show("lc-done", false);
    // As the gateway has it now: a request someone else made meanwhile, and whether a code is due.
    try { await loadApprovals(); } catch (_) { /* the dialog shows what it was given */ }
    const wanted = this.operation();
    if (["restore", "shred", "enrol"].includes(mode) && !(this.request && openStates.includes(this.request.state))) {
      this.request = latestRequest(wanted, this.target()) || this.request;
    } else if (this.request) {
      this.request = approvals.find((r) => r.id === this.request.id) || this.request;
    }
    this.codeNeeded = !(await stepUpFresh());
    this.render();
    if (!$("lifecycle").open) $("lifecycle").showModal();
    const first = [...$("lc-form").querySelectorAll("input, button[type=submit]")].find((e) => e.offsetParent !== null && !e.disabled);
    (first || $("lc-close")).focus();
  },

  /** After a live update: the link and the request as they are now; what the person typed stays. */
  update() {
    if (!$("lifecycle").open || this.busy) return;
    if (this.link) this.link = dashboardLinks.find((l) => l.id === this.link.id) || this.link;
    if (this.request) this.request = approvals.find((r) => r.id === this.request.id) || this.request;
    else if (!this.finished && this.operation() && this.target()) this.request = latestRequest(this.operation(), this.target());
    this.render();
  },

  facts() {
    const link = this.link, request = this.request;
    if (["restore", "shred", "cancel-shred"].includes(this.mode) && link) {
      const rows = [["Tenant", link.tenant], ["Link", linkName(link) + " (" + link.id + ")"], ["State", link.state && link.state.replace(/_/g, " ")],
        ["L1 key", link.keyReference && link.keyReference + " on " + link.keystore], ["L2Ref", link.l2 && link.l2.ref],
        ["Epoch", link.epoch && (this.mode === "restore" && link.state === "REVOKED" ? link.epoch + " (a restore starts epoch " + (link.epoch + 1) + ")" : link.epoch)],
        ["Revoked", link.revokedAt && when(link.revokedAt)], ["Shreds after", link.shredAfter && when(link.shredAfter)]];
      if (this.mode === "shred" && request && request.parameters && request.parameters.waitingPeriodHours) {
        rows.push(["Waiting period", request.parameters.waitingPeriodHours + " hours (as requested)"]);
      }
      if (request && this.mode !== "cancel-shred") rows.push(["Requested by", request.requestedBy + " at " + when(request.createdAt)], ["Reason", request.reason]);
      return rows;
    }
    if (request) {
      return [["Request", requestWhat(request)], ["Target", requestTarget(request)], ["Requested by", request.requestedBy + " at " + when(request.createdAt)],
        ["Reason", request.reason], ["Expires", when(request.expiresAt)]];
    }
    if (this.enrolment) return [["Region", this.enrolment.region], ["Token lifetime", Math.round(this.enrolment.ttlSeconds / 60) + " minutes"]];
    return [];
  },

  explanation(needed) {
    const link = this.link || {}, request = this.request;
    const others = (role) => needed > 1 ? " The policy asks for " + needed + " people: you, and " + (needed - 1) + " other " + roleNames[role] +
      (needed > 2 ? "s who approve." : " who approves.") : "";
    switch (this.mode) {
      case "restore": return ["notice", "The gateway probes the L1 key again and opens the tenant's sovereign binding with it: the same L2 key becomes active again" +
        (link.epoch ? " under epoch " + (link.epoch + 1) : "") + ", and every regional node is told (each unseals it at its next request). If the key was replaced or refuses, nothing changes." + others("security_admin")];
      case "shred": return ["danger-box", "After the waiting period the tenant's L2 key is destroyed for good: its sovereign binding is deleted and fenced out of the registry's files. " +
        "Data encrypted under it can never be decrypted again, by anyone. Until then one person can cancel the shred." + others("security_admin")];
      case "cancel-shred": return ["notice", "The link goes back to REVOKED: its L2 key stays locked, and can be restored with the L1 key. Stopping a destruction takes one person."];
      case "approve": return ["notice", "Your approval makes you one of the " + (request ? request.requiredPeople : needed) + " people this takes. Approve only what you expected " +
        "(ask the requester through another channel when in doubt). The requester or an approver then carries it out."];
      case "reject": return ["danger-box", "One rejection ends the request: it can no longer be approved or carried out."];
      case "withdraw": return ["notice", "Nobody can approve or carry out the request afterwards; a new one can be made later."];
      case "enrol": return ["notice", "A one-time token lets one new node of region " + (this.enrolment ? this.enrolment.region : "") + " enrol; the node then unseals the L2 keys " +
        "of the tenants that allow its region." + others("platform_operator")];
      default: return ["notice", ""];
    }
  },

  render() {
    if (!this.mode) return;
    const mode = this.mode, link = this.link, request = this.request, operation = this.operation();
    const needed = operation ? people(operation) : 1;
    const open = Boolean(request) && openStates.includes(request.state);
    const info = operations[operation] || {};
    const name = link ? linkName(link) : "";
    const about = request ? info.noun + " of " + requestTarget(request) : "";
    $("lifecycle").dataset.mode = mode;
    $("lc-title").textContent = { restore: "Restore " + name, shred: "Schedule the shred of " + name, "cancel-shred": "Cancel the shred of " + name,
      approve: "Approve the " + about, reject: "Reject the " + about, withdraw: "Withdraw the request for the " + about,
      enrol: "Node enrolment in " + (this.enrolment ? this.enrolment.region : "") }[mode];
    $("lc-facts").replaceChildren(...this.facts().filter(([, value]) => value !== undefined && value !== null && value !== "")
      .flatMap(([term, value]) => [el("dt", term), el("dd", value, term === "Reason" ? "" : "mono")]));
    const [boxClass, text] = this.explanation(needed);
    $("lc-explain").className = boxClass;
    $("lc-explain").textContent = text;
    show("lc-explain", !this.finished);   // once done, the result says what happened

    // Where the request stands, with every vote.
    show("lc-request", Boolean(request));
    if (request) {
      $("lc-request").dataset.state = request.state;
      $("lc-request-state").replaceChildren(badge(request.state), document.createTextNode(requestStatus(request)));
      $("lc-votes").replaceChildren(...request.votes.map((v) => el("li", v.approver + (v.decision === "APPROVE" ? " approved " : " rejected ") + when(v.at))));
    }

    // The one thing this dialog can do now, if anything.
    let submit = null, danger = false, creates = false;
    if (!this.finished) {
      if (mode === "restore" || mode === "shred" || mode === "enrol") {
        const applicable = mode === "enrol" || (link && link.state === "REVOKED");
        danger = mode === "shred";
        if (!applicable) submit = null;
        else if (needed <= 1) submit = info.execute;
        else if (!open) { submit = "Request approval"; creates = true; danger = false; }
        else if (request.state === "APPROVED" && participant(request)) submit = info.execute;
      } else if (mode === "cancel-shred") {
        if (link && link.state === "SHRED_SCHEDULED") submit = "Cancel the shred";
      } else if (mode === "approve" || mode === "reject") {
        if (request && mayVote(request)) { submit = mode === "approve" ? "Approve" : "Reject"; danger = mode === "reject"; }
      } else if (mode === "withdraw") {
        if (open && request.requestedBy === me.username) { submit = "Withdraw the request"; danger = true; }
      }
    }
    this.creates = creates;
    $("lc-submit").textContent = submit || "";
    $("lc-submit").className = danger ? "danger" : "";
    $("lc-submit").disabled = this.busy;
    show("lc-submit", Boolean(submit));
    show("lc-withdraw", !this.finished && ["restore", "shred", "enrol"].includes(mode) && open && request.requestedBy === me.username);
    $("lc-withdraw").disabled = this.busy;
    // The waiting period is set by whoever asks for the shred (or schedules it alone).
    show("lc-hours-box", mode === "shred" && Boolean(submit) && (creates || needed <= 1));
    show("lc-reason-box", creates);
    // A code only where the gateway wants one (not to withdraw, not to issue an approved enrolment), and only when the last is stale.
    const codeStep = Boolean(submit) && mode !== "withdraw" && !(mode === "enrol" && !creates);
    show("lc-code-box", codeStep && this.codeNeeded);
  },

  /** What must be right before a code is spent on the step. */
  problem() {
    if (!$("lc-code-box").hidden && !/^[0-9]{6}$/.test($("lc-totp").value.trim())) return "Enter the current six-digit code from your authenticator app.";
    if (!$("lc-hours-box").hidden) {
      const hours = Number($("lc-hours").value), least = Number($("lc-hours").min);
      if (!Number.isInteger(hours) || hours < least || hours > 720) return "The waiting period is a whole number of hours, at least " + least + " and at most 720.";
    }
    return "";
  },

  done(text) {
    this.finished = true;
    $("lc-done").textContent = text;
    show("lc-done", true);
  },

  async act() {
    const mode = this.mode, link = this.link, operation = this.operation();
    const needed = operation ? people(operation) : 1;
    if (this.creates) {
      const body = { operation };
      const reason = $("lc-reason").value.trim();
      if (reason) body.reason = reason;
      if (mode === "enrol") Object.assign(body, { region: this.enrolment.region, ttlSeconds: this.enrolment.ttlSeconds });
      else Object.assign(body, { tenant: link.tenant, link: link.id });
      if (mode === "shred") body.waitingPeriodHours = Number($("lc-hours").value);
      this.request = await call("POST", "/approvals", body);
      approvals = [this.request].concat(approvals.filter((r) => r.id !== this.request.id));
      return;   // the dialog now follows the request until it is approved
    }
    const withApproval = needed > 1 ? { approval: this.request.id } : {};
    const once = { "Idempotency-Key": crypto.randomUUID() };
    switch (mode) {
      case "restore": {
        const result = await call("POST", linkPath(link) + "/restore", withApproval, once);
        this.link = result.link;
        this.done("Restored: " + linkName(result.link) + " is LINKED again, epoch " + result.link.epoch + ". The same L2 key is active; every regional node was told and unseals it at its next request.");
        break;
      }
      case "shred": {
        const body = Object.assign({}, withApproval);
        if (needed <= 1) body.waitingPeriodHours = Number($("lc-hours").value);
        this.link = await call("POST", linkPath(link) + "/shred", body, once);
        this.done("Scheduled: the tenant's L2 key is destroyed after " + when(this.link.shredAfter) + ", unless the shred is cancelled before then.");
        break;
      }
      case "cancel-shred":
        this.link = await call("DELETE", linkPath(link) + "/shred");
        this.done("Cancelled: " + linkName(this.link) + " is REVOKED again; its L2 key stays locked and can be restored with the L1 key.");
        break;
      case "approve":
      case "reject":
        this.request = await call("POST", "/approvals/" + this.request.id + "/" + mode);
        this.done(mode === "reject" ? "Rejected: the request is closed; nobody can carry it out."
          : this.request.state === "APPROVED" ? "Approved: " + peopleSoFar(this.request) + ". " + this.request.requestedBy + " (or an approver) can carry it out now."
          : "Your approval is recorded: " + peopleSoFar(this.request) + " so far.");
        break;
      case "withdraw":
        this.request = await call("DELETE", "/approvals/" + this.request.id);
        this.done("Withdrawn: nobody can approve or carry out the request any more.");
        break;
      case "enrol":
        // The token appears once, in the enrolment card under the dialog.
        await issueEnrolment(this.enrolment.region, this.enrolment.ttlSeconds, needed > 1 ? this.request.id : undefined);
        this.finished = true;
        $("lifecycle").close();
        $("enrol-token").focus();
        break;
    }
  },

  async submit(event) {
    event.preventDefault();
    if (this.busy || $("lc-submit").hidden) return;
    showError("lc-error", ""); show("lc-checks", false);
    const problem = this.problem();
    if (problem) { showError("lc-error", problem); return; }
    const nothing = "Nothing was changed.";
    this.busy = true;
    this.render();
    try {
      if (!$("lc-code-box").hidden) {
        const code = $("lc-totp").value.trim();
        $("lc-totp").value = "";
        await stepUp(code, nothing);
        this.codeNeeded = false;
      }
      await this.act();
    } catch (error) {
      // The 5 minutes ran out between opening the dialog and now: ask for a code and stay.
      if (error.code === "step_up_required") this.codeNeeded = true;
      if (error.probe) { renderChecks("lc-checks", error.probe); show("lc-checks", true); }
      showError("lc-error", error.code === "step_up_required" ? "This step needs a fresh one-time code: enter the current one. " + nothing : lifecycleFailure(error));
      if (error.code === "approval_pending" || error.code === "approval_expired" || error.code === "approval_closed") {
        try { await loadApprovals(); this.request = latestRequest(this.operation(), this.target()); } catch (_) { /* shown as it was */ }
      }
    } finally {
      this.busy = false;
    }
    if (!$("lifecycle").open) { refresh(); return; }
    this.render();
    if (!$("lc-error").hidden && !$("lc-code-box").hidden) $("lc-totp").focus();
    else if (!$("lc-submit").hidden) $("lc-submit").focus();
    else $("lc-close").focus();
    refresh();
  },

  async withdraw() {
    if (!this.request || this.busy) return;
    this.busy = true;
    this.render();
    try {
      this.request = await call("DELETE", "/approvals/" + this.request.id);
      showError("lc-error", "");
    } catch (error) { showError("lc-error", "Not withdrawn: " + lifecycleFailure(error)); }
    finally { this.busy = false; }
    this.render();
    $("lc-close").focus();
    refresh();
  },

  close() {
    this.mode = null;
    if ($("lifecycle").open) $("lifecycle").close();
  },
};

// MARK: Audit viewer

const auditView = {
  cursor: null,
  records: [],
  checkpoint: null,

  async open() {
    showError("audit-error", "");
    await Promise.all([this.loadCheckpoint(), this.search()]);
  },

  async loadCheckpoint() {
    try {
      const cp = await call("GET", "/audit/checkpoint");
      this.checkpoint = cp;
      const facts = $("audit-checkpoint");
      facts.replaceChildren();
      for (const [term, value] of [["Log", cp.origin], ["Records", cp.treeSize], ["Root hash", cp.rootHash], ["Signed", when(cp.time)], ["Verifier key", cp.verifierKey]]) {
        facts.append(el("dt", term), el("dd", value, "mono"));
      }
    } catch (error) {
      showError("audit-error", error.status === 403 ? "The audit log covers every tenant: only administrators and auditors without a tenant limit can read it." : "Could not load the checkpoint: " + error.message);
    }
  },

  query() {
    const params = new URLSearchParams();
    for (const [name, id] of [["tenant", "af-tenant"], ["operation", "af-operation"], ["outcome", "af-outcome"], ["actor", "af-actor"]]) {
      const value = $(id).value.trim();
      if (value) params.set(name, value);
    }
    for (const [name, id] of [["from", "af-from"], ["to", "af-to"]]) {
      if ($(id).value) params.set(name, new Date($(id).value).toISOString());
    }
    params.set("limit", "200");
    return params;
  },

  async search(more) {
    const params = this.query();
    if (more && this.cursor) params.set("cursor", this.cursor); else this.records = [];
    try {
      const page = await call("GET", "/audit?" + params.toString());
      this.records = this.records.concat(page.items);
      this.cursor = page.nextCursor || null;
      this.render();
    } catch (error) {
      if (error.status !== 403) showError("audit-error", "Could not search the log: " + error.message);
    }
  },

  render() {
    const needle = $("af-search").value.trim().toLowerCase();
    const shown = needle ? this.records.filter((r) => JSON.stringify(r).toLowerCase().includes(needle)) : this.records;
    fill("audit-records", null, shown, (row, record) => {
      row.dataset.seq = record.seq;
      const open = el("button", String(record.seq), "secondary small");
      open.type = "button"; open.dataset.focusKey = "seq:" + record.seq;
      open.setAttribute("aria-label", "Record " + record.seq + ": details and inclusion proof");
      open.addEventListener("click", () => this.detail(record.seq, row));
      cell(row, "").replaceChildren(open);
      cell(row, when(record.time));
      cell(row, record.actor.type + " " + record.actor.id + " (" + record.actor.auth + ")");
      cell(row, record.operation, "mono nowrap");
      cell(row, record.outcome, record.outcome === "success" ? "ok" : "bad");
      cell(row, record.tenant);
      cell(row, record.target, "mono");
    });
    show("audit-records", true);
    $("audit-count").textContent = shown.length === 0 ? "No record matches these filters." : shown.length + " record(s) shown" + (this.cursor ? "; more match" : "") + ".";
    show("audit-more", Boolean(this.cursor));
  },

  async detail(seq, row) {
    for (const r of $("audit-records").tBodies[0].rows) r.classList.toggle("selected", r === row);
    try {
      const detail = await call("GET", "/audit/records/" + seq);
      $("audit-detail-title").textContent = "Record " + seq + " — " + detail.record.operation;
      $("audit-detail-record").textContent = JSON.stringify(detail.record, null, 2);
      const facts = $("audit-detail-facts");
      facts.replaceChildren(el("dt", "Leaf hash"), el("dd", detail.leafHash, "mono"), el("dt", "Tree size"), el("dd", detail.treeSize));
      $("audit-detail-path").replaceChildren(...detail.inclusionProof.map((h) => el("li", h)));
      $("audit-detail-checkpoint").textContent = detail.checkpoint;
      const proof = $("audit-detail-proof");
      proof.textContent = "Checking the proof…"; proof.className = "";
      show("audit-detail", true);
      $("audit-detail").focus();
      try {
        if (!this.checkpoint) await this.loadCheckpoint();
        const result = await AuditVerify.verifyRecordProof(detail, this.checkpoint ? this.checkpoint.verifierKey : "");
        proof.textContent = "✓ Included: checked in this browser against the signed checkpoint of " + result.treeSize + " records (" + result.time + ").";
        proof.className = "verdict ok";
      } catch (error) {
        proof.textContent = "✗ The inclusion proof does not verify: " + error.message;
        proof.className = "verdict bad";
      }
    } catch (error) { showError("audit-error", "Could not load record " + seq + ": " + error.message); }
  },

  async verify() {
    const out = $("audit-verify-result");
    out.className = ""; out.textContent = "Downloading the export and verifying…";
    $("audit-verify").disabled = true;
    try {
      const response = await fetch(api + "/audit/export", { credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const result = await AuditVerify.verifyExport(await response.text(), this.checkpoint && this.checkpoint.verifierKey);
      if (result.ok) {
        out.className = "verdict ok";
        out.textContent = "✓ The log verifies: " + result.records + " records (" + when(result.firstTime) + " – " + when(result.lastTime) + "), tree size " + result.treeSize +
          ", root " + result.root + ", " + result.checkpoints + " signed checkpoint(s) verified" + (result.unsigned ? ", " + result.unsigned + " trailing record(s) not yet under a checkpoint" : "") + ".";
      } else {
        out.className = "verdict bad";
        out.textContent = "✗ The log does not verify (line " + result.line + "): " + result.message + ".";
      }
      await this.loadCheckpoint();
    } catch (error) {
      out.className = "verdict bad";
      out.textContent = "Could not verify: " + error.message;
    } finally { $("audit-verify").disabled = false; }
  },
};

// MARK: Session

function showLogin(message) {
  me = null;
  if (feed) { feed.close(); feed = null; }
  if ($("killswitch").open) $("killswitch").close();
  lifecycle.close();
  for (const id of ["dashboard", "onboard", "audit", "who", "nav"]) show(id, false);
  // The next person to log in on this page may have another role: nothing of this one's stays in the page.
  for (const id of ["links", "approvals", "approvals-history", "nodes", "keystores", "audit-records"]) $(id).tBodies[0].replaceChildren();
  approvals = []; dashboardLinks = []; dashboardNodes = [];
  $("enrol-token").value = ""; show("enrol-result", false);
  auditView.records = []; show("audit-detail", false); $("audit-verify-result").textContent = ""; $("audit-verify-result").className = "";
  show("login", true);
  showError("login-error", message || "");
  $("username").focus();
}

async function enter(session) {
  me = session;
  $("who-name").textContent = me.username + " (" + me.role.replace("_", " ") + ")";
  show("login", false); show("who", true); show("nav", true);
  // Each role sees its duty: the wizard is the security administrator's; the platform operator has
  // nodes and enrolments, and no tenant, link, keystore or audit data (the gateway refuses them to it).
  for (const a of document.querySelectorAll("nav a")) a.hidden = (a.dataset.view === "onboard" && !isAdmin()) || (a.dataset.view === "audit" && isOperator());
  show("links-section", !isOperator());
  show("keystores-section", !isOperator());
  show("enrol", isOperator());
  show("enrol-result", false);
  $("enrol-hint").textContent = people("node.enrolment") > 1
    ? "Enrolling a node takes " + people("node.enrolment") + " platform operators: this asks for the others' approval first."
    : "The token lets one node enrol; it works once and expires.";
  connectFeed();
  route();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  show("login-error", false);
  try {
    const session = await call("POST", "/session", { username: $("username").value, password: $("password").value, totp: $("totp").value });
    csrf = session.csrfToken;
    sessionStorage.setItem("cmk-csrf", csrf);
    $("password").value = ""; $("totp").value = "";
    await enter(session);
  } catch (error) {
    showError("login-error", error.code === "locked" ? "Too many failed attempts: this account is locked for a while."
      : "The username, password or one-time code is wrong (each code works once).");
    $("totp").value = "";
    $("totp").focus();
  }
});

$("logout").addEventListener("click", async () => {
  try { await call("DELETE", "/session"); } catch (_) { /* already gone */ }
  csrf = ""; sessionStorage.removeItem("cmk-csrf");
  showLogin();
});

window.addEventListener("hashchange", route);
$("wiz-provider").addEventListener("submit", (e) => wizard.chooseProvider(e));
$("wiz-tenant").addEventListener("change", () => show("wiz-new-tenant", $("wiz-tenant").value === ""));
$("wiz-key").addEventListener("submit", (e) => wizard.chooseKey(e));
$("wiz-validate").addEventListener("submit", (e) => wizard.confirm(e));
$("wiz-again").addEventListener("click", () => wizard.start());
for (const back of document.querySelectorAll("[data-back]")) back.addEventListener("click", () => wizard.step(back.dataset.back));
$("ks-form").addEventListener("submit", (e) => killSwitch.submit(e));
$("ks-name").addEventListener("input", () => killSwitch.validate());
$("ks-totp").addEventListener("input", () => killSwitch.validate());
$("ks-cancel").addEventListener("click", () => killSwitch.close());
$("ks-close").addEventListener("click", () => killSwitch.close());
$("killswitch").addEventListener("close", () => { killSwitch.link = null; });
$("lc-form").addEventListener("submit", (e) => lifecycle.submit(e));
$("lc-close").addEventListener("click", () => lifecycle.close());
$("lc-withdraw").addEventListener("click", () => lifecycle.withdraw());
$("lifecycle").addEventListener("close", () => { lifecycle.mode = null; });
$("wiz-restorable-go").addEventListener("click", () => wizard.goRestore());
$("enrol").addEventListener("submit", (e) => enrolSubmit(e));
$("audit-filter").addEventListener("submit", (e) => { e.preventDefault(); auditView.search(); });
$("audit-filter").addEventListener("reset", () => setTimeout(() => auditView.search(), 0));
$("af-search").addEventListener("input", () => auditView.render());
$("audit-more").addEventListener("click", () => auditView.search(true));
$("audit-verify").addEventListener("click", () => auditView.verify());

(async () => {
  try { await enter(await call("GET", "/session")); } catch (_) { showLogin(); }
})();
