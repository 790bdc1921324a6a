// lineguard panel: live feed (Server-Sent Events), NG gallery, "Why?" answers streamed from the line's LLM.
// Plain browser JavaScript, no framework and nothing fetched from the network. Text from the wire is
// only ever put into the page with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const FEED_MAX = 60;
const MAX_CAMERAS = 64;  // tiles kept, least recently heard from dropped first: panel/board.py's MAX_CAMERAS
const state = { cameras: new Map(), alarms: [], heartbeat: null, heartbeatAt: null, tokenRequired: false,
  connected: false, current: null, asking: null, galleryTimer: null, turns: 0, reply: null };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

function num(value, digits) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(digits);
}

function where(grid) {
  return grid && grid.length ? grid.join(", ") : "-";
}

// a region's measured evidence against the enrolled normals, in one line (Verdict.regions[].evidence)
function evidenceText(e) {
  const parts = [];
  if (e.brightness && e.brightness !== "unchanged") {
    parts.push(`${e.brightness === "lower" ? "darker" : "brighter"} ${num(Math.abs(e.grey_delta), 0)} grey ` +
      `(${num(Math.abs(e.grey_delta_sigma), 0)}σ)`);
  }
  if (e.hue_direction && e.hue_direction !== "none") parts.push(`colour ${e.hue_direction}`);
  if (e.texture && e.texture !== "unchanged") {
    parts.push(`texture ${e.texture === "lower" ? "smoother" : "rougher"} ×${num(e.contrast_ratio, 1)}`);
  }
  const size = e.length_mm !== null && e.length_mm !== undefined
    ? `${num(e.length_mm, 1)}×${num(e.width_mm, 1)} mm` : `${num(e.length_px, 0)}×${num(e.width_px, 0)} px`;
  parts.push(`${e.shape} ${size}`);
  parts.push(`${e.kind_certainty} ${e.likely_kind}`);
  if (e.peak_vs_normals !== null && e.peak_vs_normals !== undefined) {
    parts.push(`${num(e.peak_vs_normals, 1)}× the largest of ${e.normals_compared} normals`);
  }
  return parts.join(" · ");
}

// -- live feed ---------------------------------------------------------------------------------------

function dropCamera(cameraId) {
  state.cameras.delete(cameraId);
  $("cameras").querySelector(`[data-camera="${CSS.escape(cameraId)}"]`)?.remove();
}

function renderCamera(camera) {
  state.cameras.delete(camera.camera_id);  // re-inserted: the Map's order is least recently heard from first
  state.cameras.set(camera.camera_id, camera);
  while (state.cameras.size > MAX_CAMERAS) dropCamera(state.cameras.keys().next().value);
  const box = $("cameras");
  box.querySelector(".empty")?.remove();
  let tile = box.querySelector(`[data-camera="${CSS.escape(camera.camera_id)}"]`);
  if (!tile) {
    tile = el("div", "camera");
    tile.dataset.camera = camera.camera_id;
    tile.append(el("div", "name"), el("div", "last"), el("div", "counts"));
    box.append(tile);
  }
  const last = camera.last ? camera.last.verdict : "-";
  tile.querySelector(".name").textContent = camera.camera_id;
  const lastNode = tile.querySelector(".last");
  lastNode.textContent = last;
  lastNode.className = `last v-${last}`;
  const rate = camera.reject_rate === null ? "-" : `${(100 * camera.reject_rate).toFixed(1)} %`;
  tile.querySelector(".counts").textContent =
    `OK ${camera.ok} · NG ${camera.ng} · reject ${rate}` + (camera.error + camera.timeout ? ` · errors ${camera.error + camera.timeout}` : "");
}

// calibration drift: the heartbeat names the cameras whose reject rate runs well above the budget
function markDrift(beat) {
  const drifting = new Set((beat && beat.drift_alarms ? beat.drift_alarms : []).map((a) => a.camera_id));
  document.querySelectorAll("#cameras .camera").forEach((tile) => {
    tile.classList.toggle("drift", drifting.has(tile.dataset.camera));
  });
}

function feedItem(v) {
  const item = el("li");
  item.dataset.frame = v.frame_id;
  item.append(el("span", `cls v-${v.verdict}`, v.verdict));
  const detail = v.error ? `${v.error.code}` : `${v.camera_id} · ${v.frame_id} · ${where(v.grid)}`;
  item.append(el("span", "", detail));
  item.append(el("span", "muted", clock(v.time)));
  return item;
}

function addToFeed(v, atTop) {
  const feed = $("feed");
  const item = feedItem(v);
  if (atTop) feed.prepend(item); else feed.append(item);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
}

function renderAlarms() {
  const count = $("alarm-count");
  count.textContent = String(state.alarms.length);
  count.classList.toggle("hot", state.alarms.length > 0);
  const list = $("alarm-list");
  list.replaceChildren(...state.alarms.map((a) => {
    const item = el("li");
    item.append(el("span", "kind", a.kind), el("span", "", a.message), el("span", "muted", ` ${clock(a.time)}`));
    return item;
  }));
}

function showAlarm(alarm) {
  state.alarms.unshift(alarm);
  state.alarms.length = Math.min(state.alarms.length, 50);
  renderAlarms();
  const banner = $("alarm-banner");
  banner.textContent = `${alarm.kind.replace("_", " ")}: ${alarm.message}`;
  banner.hidden = false;
  clearTimeout(showAlarm.timer);
  showAlarm.timer = setTimeout(() => { banner.hidden = true; }, 15000);
}

function renderStatus() {
  const pill = $("status");
  const beat = state.heartbeat;
  const age = state.heartbeatAt === null ? null : Date.now() / 1000 - state.heartbeatAt;
  const limit = beat ? 2.5 * beat.interval_ms / 1000 : 3;
  let text = "connecting…", cls = "pill-wait";
  if (!state.connected) { text = "no connection"; cls = "pill-alarm"; }
  else if (beat && age !== null && age > limit) { text = "runtime silent"; cls = "pill-alarm"; }
  else if (beat && beat.ready) { text = beat.draining ? "stopping" : "inspecting"; cls = beat.draining ? "pill-wait" : "pill-ok"; }
  else if (beat) { text = "not ready"; cls = "pill-alarm"; }
  pill.textContent = text;
  pill.className = `pill ${cls}`;
  $("heartbeat").textContent = age === null ? "no heartbeat yet"
    : `heartbeat ${age.toFixed(1)} s ago · queue ${beat.queue_depth} · ${beat.frames_in} frames`;
  if (beat) $("line-name").textContent = beat.line;
}

function onState(s) {
  state.connected = true;
  state.heartbeat = s.heartbeat;
  state.heartbeatAt = s.heartbeat_at;
  const current = new Set(s.cameras.map((c) => c.camera_id));
  [...state.cameras.keys()].filter((id) => !current.has(id)).forEach(dropCamera);  // the board dropped them
  s.cameras.forEach(renderCamera);
  $("feed").replaceChildren();
  s.recent.forEach((v) => addToFeed(v, false));
  state.alarms = s.alarms.slice();
  renderAlarms();
  renderStatus();
  markDrift(s.heartbeat);
}

function onVerdict(message) {
  renderCamera(message.camera);
  addToFeed(message.verdict, true);
  if (message.verdict.verdict === "NG") scheduleGallery();
}

function connectFeed() {
  const events = new EventSource("/api/events");
  events.addEventListener("state", (e) => onState(JSON.parse(e.data)));
  events.addEventListener("verdict", (e) => onVerdict(JSON.parse(e.data)));
  events.addEventListener("heartbeat", (e) => {
    const m = JSON.parse(e.data);
    state.heartbeat = m.heartbeat;
    state.heartbeatAt = m.received_at;
    state.connected = true;
    renderStatus();
    markDrift(m.heartbeat);
  });
  events.addEventListener("alarm", (e) => showAlarm(JSON.parse(e.data).alarm));
  events.onerror = () => { state.connected = false; renderStatus(); };  // EventSource reconnects by itself
  events.onopen = () => { state.connected = true; renderStatus(); };
}

// -- gallery -----------------------------------------------------------------------------------------

function overlayUrl(v) {
  return `/api/overlay.jpg?camera_id=${encodeURIComponent(v.camera_id)}&frame_id=${encodeURIComponent(v.frame_id)}`;
}

function scheduleGallery() {
  clearTimeout(state.galleryTimer);
  state.galleryTimer = setTimeout(loadGallery, 400);  // a burst of NG frames: one refresh
}

async function loadGallery() {
  const box = $("gallery");
  let frames;
  try {
    const res = await fetch("/api/gallery");
    frames = await res.json();
    if (!res.ok) throw new Error(frames.error || res.statusText);
  } catch (err) {
    box.replaceChildren(el("p", "empty", `Gallery unavailable: ${err.message}`));
    return;
  }
  if (!frames.length) { box.replaceChildren(el("p", "empty", "No rejected parts yet.")); return; }
  box.replaceChildren(...frames.map((v) => {
    const tile = el("button", "tile");
    tile.type = "button";
    tile.dataset.frame = v.frame_id;
    const img = el("img");
    img.src = overlayUrl(v);
    img.alt = `${v.frame_id} with its anomaly heatmap`;
    img.loading = "lazy";
    const caption = el("div", "caption");
    caption.append(el("div", "where", where(v.regions.map((r) => r.grid))),
      el("div", "", `${v.camera_id} · ${v.frame_id}`),
      el("div", "muted", `score ${num(v.score, 2)} · p ${num(v.p_value, 4)} · ${clock(v.archived_at)}`));
    tile.append(img, caption);
    tile.addEventListener("click", () => openDetail(v));
    return tile;
  }));
}

// -- detail and "Why?" -------------------------------------------------------------------------------

function openDetail(v) {
  state.current = v;
  $("detail-title").textContent = `${v.camera_id} · ${v.frame_id}`;
  $("detail-overlay").src = overlayUrl(v);
  const facts = $("detail-facts");
  const rows = [["Verdict", v.verdict], ["Where", where(v.regions.map((r) => r.grid))], ["Score", num(v.score, 3)],
    ["p-value", num(v.p_value, 5)], ["Product", v.product], ["Decided by", v.decided_by || "-"],
    ["Time", clock(v.archived_at)], ["Latency", `${num(v.latency_ms.total, 0)} ms`]];
  v.regions.forEach((r, i) => {
    if (r.evidence) rows.splice(2 + i, 0, [`Region ${i + 1}`, `${r.grid}: ${evidenceText(r.evidence)}`]);
  });
  facts.replaceChildren(...rows.flatMap(([k, value]) => [el("dt", "", k), el("dd", "", value)]));
  $("answer").textContent = "";  // a new part, a new conversation
  state.turns = 0;
  $("answer-state").textContent = "Tap a question.";
  $("token-row").hidden = !state.tokenRequired;
  $("detail").showModal();
}

function closeDetail() {
  cancelAsk("closed");
  $("detail").close();
}

function cancelAsk(reason) {
  if (state.asking) {
    state.asking.abort();
    state.asking = null;
    $("answer-state").textContent = reason === "closed" ? "" : "Cancelled.";
  }
  $("cancel").hidden = true;
}

async function ask(question) {
  if (!state.current) return;
  cancelAsk("replaced");
  const controller = new AbortController();
  state.asking = controller;
  // the thread stays visible while the part is open; each question continues the conversation
  const turn = el("div", "turn");
  turn.append(el("div", "q", question || "What did the inspection find?"), el("div", "a"));
  $("answer").append(turn);
  state.reply = turn.lastChild;
  const followUp = state.turns > 0;
  $("answer-state").textContent = "Thinking…";
  $("cancel").hidden = false;
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const res = await fetch("/api/explain", { method: "POST", headers, signal: controller.signal,
      body: JSON.stringify({ frame_id: state.current.frame_id, question: question || null, follow_up: followUp }) });
    if (res.status === 401) {
      state.tokenRequired = true;
      $("token-row").hidden = false;
      $("answer-state").textContent = "Enter the operator token, then ask again.";
      return;
    }
    if (!res.ok) { $("answer-state").textContent = `Cannot ask: ${(await res.json()).error}`; return; }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data) onReply(JSON.parse(data));
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") $("answer-state").textContent = `Connection lost: ${err.message}`;
  } finally {
    if (state.asking === controller) { state.asking = null; $("cancel").hidden = true; }
  }
}

function onReply(reply) {
  if (reply.type === "chunk") {
    if (state.reply) state.reply.textContent += reply.text;
    $("answer").scrollTop = $("answer").scrollHeight;
    $("answer-state").textContent = "Answering…";
  } else if (reply.type === "final") {
    const seconds = reply.total_ms ? (reply.total_ms / 1000).toFixed(1) : "-";
    $("answer-state").textContent = reply.finish_reason === "cancelled" ? "Cancelled." : `Done in ${seconds} s.`;
    if (reply.finish_reason !== "cancelled") state.turns += 1;
  } else {
    $("answer-state").textContent = `${reply.error.code}: ${reply.error.message}`;
  }
}

// -- wiring ------------------------------------------------------------------------------------------

async function init() {
  try {
    state.tokenRequired = (await (await fetch("/api/session")).json()).token_required;
  } catch { /* the feed's status shows a dead panel */ }
  document.querySelectorAll(".preset").forEach((b) => b.addEventListener("click", () => ask(b.dataset.question)));
  $("ask-form").addEventListener("submit", (e) => { e.preventDefault(); ask($("ask-text").value.trim()); });
  $("cancel").addEventListener("click", () => cancelAsk("cancelled"));
  $("detail-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("cancel", () => cancelAsk("closed"));
  $("alarms-button").addEventListener("click", () => $("alarms").showModal());
  $("alarms-close").addEventListener("click", () => $("alarms").close());
  $("gallery-refresh").addEventListener("click", loadGallery);
  connectFeed();
  loadGallery();
  setInterval(renderStatus, 500);
}

document.addEventListener("DOMContentLoaded", init);
