// The Sovereign Portal: plain JavaScript, no build step. Data is written with textContent
// only (never parsed as HTML), and the page runs under a strict Content-Security-Policy.
"use strict";

const api = "/api/v1";
let csrf = sessionStorage.getItem("cmk-csrf") || "";
let feed = null;
let refreshTimer = null;

const $ = (id) => document.getElementById(id);
const show = (id, visible) => { $(id).hidden = !visible; };

async function call(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(api + path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : {};
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || ("HTTP " + response.status));
    error.status = response.status;
    error.code = data.error && data.error.code;
    throw error;
  }
  return data;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "—" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }

function fill(tableId, emptyId, rows, render) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren();
  for (const item of rows) { const row = document.createElement("tr"); render(row, item); body.appendChild(row); }
  show(tableId, rows.length > 0);
  show(emptyId, rows.length === 0);
}

async function refresh() {
  try {
    const [tenants, nodes, keystores] = await Promise.all([call("GET", "/tenants?limit=200"), call("GET", "/nodes"), call("GET", "/keystores")]);
    const links = [];
    for (const tenant of tenants.items) {
      const page = await call("GET", "/tenants/" + encodeURIComponent(tenant.id) + "/l1-links?limit=200");
      if (page.items.length === 0) links.push({ tenant: tenant.id });
      for (const link of page.items) links.push(Object.assign({ tenant: tenant.id }, link));
    }
    fill("links", "links-empty", links, (row, link) => {
      cell(row, link.tenant);
      cell(row, link.id ? link.id.slice(0, 8) : "no link yet");
      const state = link.l2 && link.l2.state === "LOCKED" ? "LOCKED" : link.state;
      const badge = cell(row, "");
      if (state) { const span = document.createElement("span"); span.className = "badge state-" + state; span.textContent = state; badge.replaceChildren(span); }
      cell(row, link.keyReference);
      const probe = link.lastProbe;
      cell(row, probe ? (probe.passed ? "passed " : "failed ") + when(probe.at) : undefined, probe ? (probe.passed ? "ok" : "bad") : "");
      cell(row, probe && probe.report ? probe.report.latencyMilliseconds.toFixed(1) + " ms" : undefined);
    });
    fill("nodes", "nodes-empty", nodes.items, (row, node) => {
      cell(row, node.id.slice(0, 8));
      cell(row, node.region);
      cell(row, node.connected ? "connected" : "offline — keys end with the lease", node.connected ? "ok" : "bad");
      cell(row, when(node.lastHeartbeatAt));
      cell(row, node.keysHeld);
      cell(row, when(node.leaseExpiresAt));
    });
    fill("keystores", "keystores-empty", keystores.items, (row, keystore) => {
      cell(row, keystore.id);
      cell(row, keystore.status && (keystore.status.label || keystore.status.name));
      const state = keystore.status && keystore.status.state;
      cell(row, state || keystore.state, state === "available" ? "ok" : "warn");
    });
    show("dashboard-error", false);
  } catch (error) {
    if (error.status === 401) return showLogin();
    $("dashboard-error").textContent = "Could not load the status: " + error.message;
    show("dashboard-error", true);
  }
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 150);
}

function connectFeed() {
  if (feed) feed.close();
  feed = new EventSource(api + "/events/stream");
  feed.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "badge ok"; });
  feed.addEventListener("changed", scheduleRefresh);
  feed.addEventListener("error", () => { $("live").textContent = "reconnecting…"; $("live").className = "badge warn"; });
}

function showLogin() {
  if (feed) { feed.close(); feed = null; }
  show("dashboard", false); show("who", false); show("login", true);
  $("username").focus();
}

async function showDashboard(me) {
  $("who-name").textContent = me.username + " (" + me.role.replace("_", " ") + ")";
  show("login", false); show("who", true); show("dashboard", true);
  await refresh();
  connectFeed();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  show("login-error", false);
  try {
    const me = await call("POST", "/session", { username: $("username").value, password: $("password").value, totp: $("totp").value });
    csrf = me.csrfToken;
    sessionStorage.setItem("cmk-csrf", csrf);
    $("password").value = ""; $("totp").value = "";
    await showDashboard(me);
  } catch (error) {
    $("login-error").textContent = error.code === "locked" ? "Too many failed attempts: this account is locked for a while."
      : "The username, password or one-time code is wrong (each code works once).";
    show("login-error", true);
    $("totp").value = "";
    $("totp").focus();
  }
});

$("logout").addEventListener("click", async () => {
  try { await call("DELETE", "/session"); } catch (_) { /* already gone */ }
  csrf = ""; sessionStorage.removeItem("cmk-csrf");
  showLogin();
});

(async () => {
  try { await showDashboard(await call("GET", "/session")); } catch (_) { showLogin(); }
})();
