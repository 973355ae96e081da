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

function badge(state) { return el("span", state, "badge state-" + state); }

function showError(id, message) { $(id).textContent = message; show(id, Boolean(message)); }

// MARK: Views

const views = { "#status": "dashboard", "#onboard": "onboard", "#audit": "audit" };

function route() {
  if (!me) return;
  let view = views[location.hash] || "dashboard";
  if (view === "onboard" && me.role !== "security_admin") view = "dashboard";   // auditors read, they do not link
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

async function refresh() {
  try {
    const [tenants, nodes, keystores] = await Promise.all([call("GET", "/tenants?limit=200"), call("GET", "/nodes"), call("GET", "/keystores")]);
    const links = [];
    for (const tenant of tenants.items) {
      const page = await call("GET", "/tenants/" + encodeURIComponent(tenant.id) + "/l1-links?limit=200");
      if (page.items.length === 0) links.push({ tenant: tenant.id });
      for (const link of page.items) links.push(link);
    }
    dashboardNodes = nodes.items;
    fill("links", "links-empty", links, renderLink);
    fill("nodes", "nodes-empty", nodes.items, renderNode);
    const offline = nodes.items.filter((n) => !n.connected).length;
    $("nodes-offline").textContent = offline ? offline + " node(s) offline: they cannot receive a revocation until they reconnect, and they drop their keys by themselves when their lease ends. Check the node's process and its network path to the gateway." : "";
    show("nodes-offline", offline > 0);
    fill("keystores", "keystores-empty", keystores.items, renderKeystore);
    showError("dashboard-error", "");
    if (killSwitch.link) killSwitch.refresh();
  } catch (error) {
    if (error.status === 401) return;
    showError("dashboard-error", "Could not load the status: " + error.message);
  }
}

function renderLink(row, link) {
  row.dataset.tenant = link.tenant;
  cell(row, link.tenant);
  if (!link.id) {
    cell(row, "no link yet");
    cell(row); cell(row); cell(row); cell(row);
    const actions = cell(row, "");
    if (!me || me.role !== "security_admin") return;
    const a = el("a", "Link a key", "button small"); a.href = "#onboard"; a.dataset.focusKey = "onboard:" + link.tenant;
    a.addEventListener("click", () => { wizard.preselect = link.tenant; });
    actions.replaceChildren(a);
    return;
  }
  row.dataset.link = link.id;
  cell(row, linkName(link), "mono");
  const state = link.l2 && link.l2.state === "LOCKED" ? "LOCKED" : link.state;
  cell(row, "").replaceChildren(badge(state));
  cell(row, link.keyReference, "mono");
  const probe = link.lastProbe;
  const probeCell = cell(row, probe ? (probe.passed ? "passed " : "failed ") + when(probe.at) : undefined, probe ? (probe.passed ? "ok" : "bad") : "");
  if (probe && !probe.passed && probe.report && probe.report.failure) {
    probeCell.appendChild(el("span", probe.report.failure.reason + " Fix it on the token, then re-probe.", "reason"));
  }
  cell(row, probe && probe.report ? probe.report.latencyMilliseconds.toFixed(1) + " ms" : undefined);
  const actions = cell(row, "");
  const buttons = [];
  const admin = me && me.role === "security_admin";
  if (link.state !== "REVOKED" && admin) {
    const reprobe = el("button", "Re-probe", "secondary small"); reprobe.type = "button"; reprobe.dataset.focusKey = "reprobe:" + link.id;
    reprobe.setAttribute("aria-label", "Re-probe " + linkName(link));
    reprobe.addEventListener("click", async () => {
      reprobe.disabled = true;
      try { await call("POST", "/tenants/" + encodeURIComponent(link.tenant) + "/l1-links/" + link.id + "/probe"); await refresh(); }
      catch (error) { showError("dashboard-error", "Re-probe failed: " + error.message); }
      finally { reprobe.disabled = false; }
    });
    const revoke = el("button", "Revoke…", "danger small"); revoke.type = "button"; revoke.dataset.focusKey = "revoke:" + link.id;
    revoke.setAttribute("aria-label", "Revoke " + linkName(link) + " (kill-switch)");
    revoke.addEventListener("click", () => killSwitch.confirm(link));
    buttons.push(reprobe, revoke);
  } else if (link.state === "REVOKED") {
    const proof = el("button", "Proof", "secondary small"); proof.type = "button"; proof.dataset.focusKey = "proof:" + link.id;
    proof.setAttribute("aria-label", "Revocation proof of " + linkName(link));
    proof.addEventListener("click", () => killSwitch.progress(link));
    buttons.push(proof);
  }
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
};

const wizard = {
  preselect: null,
  state: {},

  async start() {
    this.state = {};
    showError("wiz-error", "");
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
      const active = links.items.find((l) => l.state !== "REVOKED");
      if (active) return showError("wiz-error", "Tenant " + tenant + " already has an active link (" + linkName(active) + "). Revoke it on the status page first; a tenant has one active L1 key.");
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
    show("wiz-keys-fieldset", this.state.provider === "pkcs11");
    if (this.state.provider !== "pkcs11") {
      $("wiz-key-hint").textContent = "Name the key in " + kind.name + " for tenant " + this.state.tenant + ": the gateway uses keystore " + this.state.keystore + "'s credentials and endpoint.";
      return;
    }
    $("wiz-key-hint").textContent = "Pick a key on keystore " + this.state.keystore + " for tenant " + this.state.tenant + ". Keys the probe cannot use as an L1 key are shown but cannot be chosen.";
    try {
      const keys = await call("GET", "/keystores/" + encodeURIComponent(this.state.keystore) + "/keys");
      const secretKeys = keys.items.filter((k) => k.objectClass === "secret-key");
      fill("wiz-keys", "wiz-keys-empty", secretKeys, (row, key) => {
        const choose = cell(row, "");
        const radio = el("input"); radio.type = "radio"; radio.name = "wiz-key"; radio.value = key.uri; radio.disabled = !key.usableAsL1;
        radio.id = "wiz-key-" + row.rowIndex;
        radio.setAttribute("aria-label", "Use " + (key.label || key.idHex));
        radio.addEventListener("change", () => { $("wiz-uri").value = ""; });
        choose.replaceChildren(radio);
        cell(row, key.label, "mono");
        cell(row, key.idHex, "mono");
        cell(row, (key.keyType || "").replace("CKK_", "") + (key.bits ? " " + key.bits : ""));
        cell(row, key.usableAsL1 ? "yes" : "no — " + (!key.canWrap ? "cannot wrap (CKA_WRAP false)" : !key.canUnwrap ? "cannot unwrap (CKA_UNWRAP false)" : "not an AES key"), key.usableAsL1 ? "ok" : "bad");
      });
      $("wiz-keys-empty").textContent = "The token holds no secret key. Generate an AES-256 key with CKA_WRAP and CKA_UNWRAP on the token (for example with your HSM's tools), or paste a URI below.";
    } catch (error) {
      fill("wiz-keys", "wiz-keys-empty", [], () => {});
      $("wiz-keys-empty").textContent = "The token's keys cannot be listed (" + error.message + "). You can still paste the key's PKCS#11 URI.";
    }
  },

  async chooseKey(event) {
    event.preventDefault();
    showError("wiz-error", "");
    const picked = document.querySelector("input[name='wiz-key']:checked");
    const key = $("wiz-uri").value.trim() || (picked && picked.value);
    if (!key) return showError("wiz-error", this.state.provider === "pkcs11" ? "Choose a key from the list or paste its PKCS#11 URI." : "Enter the key's name: " + (providers[this.state.provider] || providers.pkcs11).label + ".");
    this.state.key = key;
    this.step("validate");
    $("wiz-probe-summary").textContent = "Probing " + key + " …";
    $("wiz-probe-summary").className = "";
    $("wiz-checks").replaceChildren();
    $("wiz-confirm").disabled = true;
    show("wiz-restore", false);
    try {
      const report = await call("POST", "/tenants/" + encodeURIComponent(this.state.tenant) + "/l1-probes",
                                { provider: this.state.provider, keystore: this.state.keystore, key });
      this.showReport(report);
    } catch (error) {
      $("wiz-probe-summary").textContent = "The key could not be validated: " + error.message;
      $("wiz-probe-summary").className = "error";
    }
  },

  showReport(report) {
    const list = $("wiz-checks");
    list.replaceChildren();
    for (const check of report.checks) {
      const li = el("li", undefined, check.passed ? "pass" : "fail");
      li.dataset.check = check.name;
      li.append(el("span", check.name.replace(/_/g, " "), "name"), el("span", (check.passed ? "passed — " : "failed — ") + check.detail));
      list.appendChild(li);
    }
    if (report.passed) {
      $("wiz-probe-summary").textContent = "Validation passed: every check succeeded in " + report.latencyMilliseconds.toFixed(1) + " ms" + (report.mechanism ? " with " + report.mechanism : "") + ". Confirm to link the key.";
      $("wiz-probe-summary").className = "ok";
      $("wiz-confirm").disabled = false;
      show("wiz-restore", this.state.restore);
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
      if (this.state.restore) {
        const code = $("wiz-restore-totp").value.trim();
        if (!/^[0-9]{6}$/.test(code)) { $("wiz-confirm").disabled = false; return showError("wiz-error", "Enter the current six-digit code to restore access."); }
        await call("POST", "/session/step-up", { totp: code });
        $("wiz-restore-totp").value = "";
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
      if (error.probe) this.showReport(error.probe);
      showError("wiz-error", error.code === "step_up_required" || error.code === "invalid_credentials" ? "The one-time code was not accepted (each code works once): enter the next one." : "Linking failed: " + error.message);
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
    const path = "/tenants/" + encodeURIComponent(link.tenant) + "/l1-links/" + link.id;
    try {
      await call("POST", "/session/step-up", { totp: $("ks-totp").value.trim() });
      $("ks-totp").value = "";
    } catch (error) {
      $("ks-totp").value = ""; $("ks-totp").focus();
      return showError("ks-error", error.code === "locked" ? "Too many wrong codes: the account is locked for a while. Nothing was revoked."
        : "The one-time code was not accepted (each code works once; wait for the next one). Nothing was revoked.");
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
      ? " Every node enrolled at the revocation (" + total + ") dropped the keys and signed a proof" + took + ". The tenant's L2 key stays locked until a new link is made with the L1 key."
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
  for (const id of ["dashboard", "onboard", "audit", "who", "nav"]) show(id, false);
  show("login", true);
  showError("login-error", message || "");
  $("username").focus();
}

async function enter(session) {
  me = session;
  $("who-name").textContent = me.username + " (" + me.role.replace("_", " ") + ")";
  show("login", false); show("who", true); show("nav", true);
  for (const a of document.querySelectorAll("nav a")) a.hidden = me.role !== "security_admin" && a.dataset.view === "onboard";
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
$("audit-filter").addEventListener("submit", (e) => { e.preventDefault(); auditView.search(); });
$("audit-filter").addEventListener("reset", () => setTimeout(() => auditView.search(), 0));
$("af-search").addEventListener("input", () => auditView.render());
$("audit-more").addEventListener("click", () => auditView.search(true));
$("audit-verify").addEventListener("click", () => auditView.verify());

(async () => {
  try { await enter(await call("GET", "/session")); } catch (_) { showLogin(); }
})();
