"use strict";
const TEXT = {
  zh: { title: "雪亮工程 · 告警值守", grid: "网格", all: "全部", operator: "值守员", token: "令牌", alerts: "实时告警", cameras: "摄像机状态",
        camera: "摄像机", state: "状态", reason: "原因", ack: "确认", acked: "已确认", by: "确认人", live: "实时连接", offline: "连接中断，重连中",
        level: "升级", dispatched: "已派往", falseAlarms: "误报率（已研判）", verdict: "研判", verdicts: { confirmed: "属实", "false-alarm": "误报", handled: "已处置" }, mute: "屏蔽此区域", acceptView: "确认新视角", muted: "已屏蔽区域", unmute: "解除屏蔽", unauthorized: "需要令牌：请在上方填写令牌", forbidden: "此令牌无权执行该操作", source: { video: "视频", sensor: "传感器", fused: "视频+传感器" },
        states: { connecting: "连接中", streaming: "正常", reconnecting: "重连中", failed: "故障", stopped: "已停止", unassigned: "未分配", unknown: "未知" },
        hazards: { fire: "火情", smoke: "烟雾", "danger-zone": "危险区域有人", crowd: "人员聚集", "fallen-person": "有人摔倒", flood: "水位超警", "gas-leak": "燃气泄漏" },
        health: "设备完好（近24小时）", count: "摄像机数", online: "在线率", usable: "完好率", since: "自", healthy: "全部摄像机画面正常",
        problems: { dark: "画面过暗", bright: "画面过亮", occluded: "镜头遮挡", blurred: "画面模糊", "color-cast": "画面偏色", frozen: "画面冻结", moved: "镜头移位", "video-loss": "视频丢失" } },
  en: { title: "Sharp Eyes · Alert desk", grid: "Grid", all: "All", operator: "Operator", token: "Token", alerts: "Live alerts", cameras: "Cameras",
        camera: "Camera", state: "State", reason: "Reason", ack: "Acknowledge", acked: "Acknowledged", by: "by", live: "live", offline: "disconnected, retrying",
        level: "escalation", dispatched: "sent to", falseAlarms: "False alarms (of judged)", verdict: "verdict", verdicts: { confirmed: "real", "false-alarm": "false alarm", handled: "handled" }, mute: "mute this region", acceptView: "accept the new view", muted: "Muted regions", unmute: "unmute", unauthorized: "A token is needed: enter it above", forbidden: "This token may not do that", source: { video: "video", sensor: "sensor", fused: "video + sensor" },
        states: { connecting: "connecting", streaming: "streaming", reconnecting: "reconnecting", failed: "failed", stopped: "stopped", unassigned: "unassigned", unknown: "unknown" },
        hazards: {},
        health: "Camera health (last 24 h)", count: "Cameras", online: "Online", usable: "Usable", since: "since", healthy: "Every camera's picture is fine",
        problems: { dark: "too dark", bright: "too bright", occluded: "lens covered", blurred: "blurred", "color-cast": "colour cast", frozen: "frozen picture", moved: "camera moved", "video-loss": "video loss" } },
};
const params = new URLSearchParams(location.search);
let lang = params.get("lang") || localStorage.getItem("sharpeyes.lang") || (navigator.language.startsWith("zh") ? "zh" : "en");
const alerts = new Map();
/** Regions muted after false alarms (the whole cluster's), from /api/mutes. */
let mutes = [];
const grids = new Map();
/** Snapshot blobs by alert id: fetched once, with the token. */
const snapshots = new Map();
const TOKEN = "sharpeyes.token";
const $ = (sel) => document.querySelector(sel);
const t = (k) => TEXT[lang][k];
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-t]").forEach((el) => { el.textContent = t(el.dataset.t); });
  $("#lang").textContent = lang === "zh" ? "English" : "中文";
  renderAlerts();
}

function hazardName(h) { return TEXT[lang].hazards[h] || h; }

function renderAlert(entry) {
  const a = entry.alert;
  const li = document.createElement("li");
  li.className = `alert ${a.severity}` + (entry.ack ? " acked" : "");
  li.dataset.id = a.id;
  li.dataset.grid = a.grid.path.map((g) => g.id).join(" ");
  const where = a.grid.path.map((g) => g.name).join(" / ");
  const evidence = (a.evidence || []).map((e) => `${esc(e.sensor_id)}: ${esc(e.value)} ${esc(e.unit)} (${esc(e.rule)})`).join("; ");
  const img = a.snapshot ? `<img alt="">` : "<div></div>";
  const ack = entry.ack
    ? `<span class="done">${esc(t("acked"))}${entry.ack.by ? " · " + esc(t("by")) + " " + esc(entry.ack.by) : ""}</span>`
    : `<button class="ack" type="button">${esc(t("ack"))}</button>`;
  // The operator's judgement: with the acknowledgement, or changed after it.
  const judged = entry.ack && entry.ack.verdict
    ? `<div class="verdict-done" data-verdict="${esc(entry.ack.verdict)}">${esc(t("verdict"))}: ${esc(t("verdicts")[entry.ack.verdict] || entry.ack.verdict)}${entry.ack.note ? " · " + esc(entry.ack.note) : ""}</div>`
    : "";
  const verdicts = Object.entries(t("verdicts")).map(([v, name]) =>
    `<button class="verdict" type="button" data-verdict="${esc(v)}">${esc(name)}</button>`).join("");
  // From a false alarm the operator may mute its region on that camera for that hazard.
  const mutable = entry.ack && entry.ack.verdict === "false-alarm" && a.camera && (a.boxes || []).length;
  const mute = !mutable ? ""
    : mutes.some((m) => m.alert_id === a.id) ? `<div class="muted-done">${esc(t("muted"))}</div>`
    : `<button class="mute" type="button">${esc(t("mute"))}</button>`;
  li.innerHTML = `${img}<div>
      <div class="what">${esc(hazardName(a.hazard))} <span class="tag">${esc(a.severity)}</span><span class="tag ${esc(a.source)}">${esc(t("source")[a.source] || a.source)}</span>${a.escalation_level ? `<span class="tag">${esc(t("level"))} ${a.escalation_level}</span>` : ""}</div>
      <div class="meta">${esc(a.camera ? a.camera.name : "")} · ${esc(where)}</div>
      <div class="meta">${esc(new Date(a.detected_at).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB"))} · ${Math.round(a.confidence * 100)}%</div>
      ${evidence ? `<div class="meta">${evidence}</div>` : ""}
      ${entry.dispatched && entry.dispatched.length ? `<div class="meta dispatched">${esc(t("dispatched"))} ${entry.dispatched.map(esc).join(", ")}</div>` : ""}
    </div><div>${ack}${judged}<div class="verdicts">${verdicts}</div>${mute}</div>`;
  const button = li.querySelector("button.ack");
  if (button) button.addEventListener("click", () => acknowledge(a.id));
  li.querySelectorAll("button.verdict").forEach((b) => b.addEventListener("click", () => acknowledge(a.id, b.dataset.verdict)));
  const muteButton = li.querySelector("button.mute");
  if (muteButton) muteButton.addEventListener("click", () => muteRegion(a.id));
  const picture = li.querySelector("img");
  if (picture) showSnapshot(picture, a.id);
  return li;
}

/** The token the operator entered; kept for this tab only (session storage). */
function token() { return $("#token").value || sessionStorage.getItem(TOKEN) || ""; }

/** A request to the API with the token; a refusal is said in the status line. */
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const res = await fetch(path, { ...options, headers });
  if (res.status === 401) $("#status").textContent = t("unauthorized");
  if (res.status === 403) $("#status").textContent = t("forbidden");
  return res;
}

/** Snapshots need the token too, which an img src cannot carry: fetched, then shown. */
function showSnapshot(img, id) { return showPicture(img, `/api/alerts/${encodeURIComponent(id)}/snapshot`); }

async function showPicture(img, path) {
  const id = path;
  if (!snapshots.has(id)) {
    snapshots.set(id, api(path)
      .then((res) => (res.ok ? res.blob() : Promise.reject(res.status)))
      .then((blob) => URL.createObjectURL(blob))
      .catch(() => { snapshots.delete(id); return null; }));
  }
  const url = await snapshots.get(id);
  if (url) img.src = url;
}

function renderAlerts() {
  const list = $("#alerts");
  const grid = $("#grid").value;
  list.replaceChildren(...[...alerts.values()]
    .sort((x, y) => (x.alert.id < y.alert.id ? 1 : -1))
    .filter((e) => !grid || e.alert.grid.path.some((g) => g.id === grid))
    .map(renderAlert));
  renderFalseAlarms();
}

/** Each camera's false alarms among its judged alerts in the list (the whole cluster's). */
function renderFalseAlarms() {
  const judged = new Map();
  for (const e of alerts.values()) {
    if (!e.ack || !e.ack.verdict || !e.alert.camera) continue;
    const [f, n] = judged.get(e.alert.camera.id) || [0, 0];
    judged.set(e.alert.camera.id, [f + (e.ack.verdict === "false-alarm" ? 1 : 0), n + 1]);
  }
  document.querySelectorAll("#cameras tr").forEach((tr) => {
    const td = tr.querySelector("td.false-alarms");
    const [f, n] = judged.get(tr.dataset.id) || [0, 0];
    if (td) td.textContent = n ? `${f} / ${n} (${Math.round((100 * f) / n)}%)` : "-";
  });
}

function addAlert(entry) {
  // An acknowledgement is never taken back: a list fetched before it (a new token reloads
  // the list while the operator clicks) may answer after it, and must not undo it.
  const known = alerts.get(entry.alert.id);
  if (known && known.ack && (!entry.ack || (known.ack.verdict && !entry.ack.verdict))) entry.ack = known.ack;
  if (known && known.dispatched) entry.dispatched = [...new Set([...known.dispatched, ...(entry.dispatched || [])])];
  alerts.set(entry.alert.id, entry);
  for (const g of entry.alert.grid.path) {
    if (!grids.has(g.id)) {
      grids.set(g.id, g.name);
      const o = document.createElement("option");
      o.value = g.id;
      o.textContent = g.name;
      $("#grid").append(o);
    }
  }
}

/** Acknowledges alert `id`, with a verdict (`confirmed`, `false-alarm`, `handled`) when given. */
async function acknowledge(id, verdict) {
  const by = $("#operator").value || null;
  const res = await api(`/api/alerts/${encodeURIComponent(id)}/ack`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(verdict ? { by, verdict } : { by }),
  });
  if (res.ok) { onAck(await res.json()); }
}

/** Mutes the region of false alarm `id` on its camera, for its hazard. */
async function muteRegion(id) {
  const by = $("#operator").value || null;
  const res = await api(`/api/alerts/${encodeURIComponent(id)}/mute`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ by }),
  });
  if (res.ok) loadMutes();
}

async function unmute(id) {
  const res = await api(`/api/mutes/${encodeURIComponent(id)}`, { method: "DELETE" });
  if (res.ok || res.status === 404) loadMutes();
}

async function loadMutes() {
  const res = await api("/api/mutes");
  if (!res.ok) return;
  mutes = await res.json();
  renderAlerts();
  renderMutes();
}

/** Each camera's muted regions, with where they are (share of the picture) and a way out. */
function renderMutes() {
  const pct = (v) => Math.round(v * 100);
  document.querySelectorAll("#cameras tr").forEach((tr) => {
    const td = tr.querySelector("td.mutes");
    if (!td) return;
    td.replaceChildren(...mutes.filter((m) => m.camera === tr.dataset.id).map((m) => {
      const xs = m.region.map((p) => p[0]), ys = m.region.map((p) => p[1]);
      const span = document.createElement("span");
      span.className = "mute";
      span.dataset.id = m.id;
      span.title = `${m.by || ""} ${m.at}`;
      span.innerHTML = `${esc(hazardName(m.hazard))} (x ${pct(Math.min(...xs))}–${pct(Math.max(...xs))}%, y ${pct(Math.min(...ys))}–${pct(Math.max(...ys))}%) <button class="unmute" type="button">${esc(t("unmute"))}</button>`;
      span.querySelector("button").addEventListener("click", () => unmute(m.id));
      return span;
    }));
  });
}

function onAck(ack) {
  const entry = alerts.get(ack.alert_id);
  if (entry) { entry.ack = ack; renderAlerts(); }
}

async function loadAlerts() {
  const res = await api("/api/alerts?limit=200");
  if (res.ok) { for (const e of await res.json()) addAlert(e); renderAlerts(); }
}

async function loadCameras() {
  const res = await api("/api/cameras");
  if (!res.ok) return;
  const list = await res.json();
  const rows = list.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    tr.innerHTML = `<td>${esc(c.name)}</td><td>${esc(c.grid)}</td><td class="state state-${esc(c.state)}">${esc(t("states")[c.state] || c.state)}${c.node ? ` <small class="node">${esc(c.node)}</small>` : ""}</td><td>${esc(c.reason || "")}</td><td class="false-alarms"></td><td class="mutes"></td>`;
    return tr;
  });
  $("#cameras").replaceChildren(...rows);
  renderFalseAlarms();
  renderMutes();
  renderProblems(list);
}

/** Cameras with a problem, longest-standing first, each with the frame that showed it. */
function renderProblems(list) {
  const names = t("problems");
  const ill = list.filter((c) => c.health && c.health.problems.length)
    .sort((x, y) => (x.health.since < y.health.since ? -1 : 1));
  if (!ill.length) {
    const li = document.createElement("li");
    li.className = "meta";
    li.textContent = t("healthy");
    $("#problems").replaceChildren(li);
    return;
  }
  $("#problems").replaceChildren(...ill.map((c) => {
    const li = document.createElement("li");
    li.className = "problem";
    li.dataset.id = c.id;
    const since = new Date(c.health.since).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB");
    li.innerHTML = `${c.health.snapshot ? `<img alt="">` : "<div></div>"}<div>
        <div class="what">${c.health.problems.map((p) => esc(names[p] || p)).join(" · ")}</div>
        <div class="meta">${esc(c.name)} · ${esc(c.grid)}</div>
        <div class="meta">${esc(t("since"))} ${esc(since)}</div>
        ${c.health.problems.includes("moved") ? `<button class="accept-view" type="button">${esc(t("acceptView"))}</button>` : ""}</div>`;
    const accept = li.querySelector("button.accept-view");
    if (accept) accept.addEventListener("click", () => acceptView(c.id, accept));
    const img = li.querySelector("img");
    if (img && c.health.snapshot.startsWith("/api/")) showPicture(img, c.health.snapshot);
    return li;
  }));
}

/** Takes a re-aimed camera's view as it is now for its health reference. */
async function acceptView(id, button) {
  const res = await api(`/api/cameras/${encodeURIComponent(id)}/view`, { method: "POST" });
  if (res.ok) { button.disabled = true; button.textContent += " ✓"; }
}

/** Online and usable rates per grid over the last 24 h, worst first. */
async function loadRates() {
  const res = await api("/api/health/report?level=grid&since=24h");
  if (!res.ok) return;
  const pct = (r) => (r == null ? "-" : `${(r * 100).toFixed(1)}%`);
  const rows = (await res.json()).rows.map((g) => {
    const tr = document.createElement("tr");
    tr.dataset.id = g.id;
    const low = (r) => (r != null && r < 0.9 ? ' class="low"' : "");
    tr.innerHTML = `<td>${esc(g.name)}</td><td>${esc(g.cameras)}</td><td${low(g.online_rate)}>${pct(g.online_rate)}</td><td${low(g.usable_rate)}>${pct(g.usable_rate)}</td>`;
    return tr;
  });
  $("#rates").replaceChildren(...rows);
}

function onEvent(name, data) {
  if (name === "alert") { addAlert(JSON.parse(data)); renderAlerts(); }
  else if (name === "ack") onAck(JSON.parse(data));
  else if (name === "dispatched") {
    const d = JSON.parse(data);
    const entry = alerts.get(d.alert_id);
    if (entry) { entry.dispatched = [...new Set([...(entry.dispatched || []), ...d.to])]; renderAlerts(); }
  }
  else if (name === "lagged") loadAlerts();
}

/** The live feed (server-sent events), read with fetch so that it carries the token. */
let feed = null;
async function connect() {
  if (feed) feed.abort();
  const mine = new AbortController();
  feed = mine;
  while (feed === mine) {
    try {
      const res = await api("/api/events", { headers: { Accept: "text/event-stream" }, signal: mine.signal });
      if (res.ok) {
        $("#status").textContent = "● " + t("live");
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) name = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
            }
            if (data) onEvent(name, data);
          }
        }
      }
    } catch (e) {
      if (mine.signal.aborted) return;
    }
    if (feed !== mine) return;
    if (!$("#status").textContent.startsWith("○") && token()) $("#status").textContent = "○ " + t("offline");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/** A new token: everything is loaded again with it. */
function useToken() {
  sessionStorage.setItem(TOKEN, $("#token").value);
  connect();
  loadAlerts();
  loadCameras();
  loadRates();
  loadMutes();
}

$("#lang").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("sharpeyes.lang", lang); applyLang(); loadCameras(); loadRates(); });
$("#grid").addEventListener("change", renderAlerts);
localStorage.removeItem(TOKEN); // kept there by earlier versions: not across sessions any more
$("#token").value = sessionStorage.getItem(TOKEN) || "";
$("#token").addEventListener("change", useToken);
$("#operator").value = localStorage.getItem("sharpeyes.operator") || "";
$("#operator").addEventListener("change", () => localStorage.setItem("sharpeyes.operator", $("#operator").value));
applyLang();
connect();
loadAlerts();
loadCameras();
loadRates();
loadMutes();
setInterval(loadCameras, 3000);
setInterval(loadMutes, 10000);
setInterval(loadRates, 15000);
