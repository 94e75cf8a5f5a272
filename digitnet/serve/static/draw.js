// digitnet draw: the page. Plain JavaScript, no libraries, no build step.
//
// The pad keeps the strokes (for undo) and, after an upload, noise or a dream, a picture
// under them. Whatever is on it goes to POST /api/predict as a PNG, so the server applies the
// model's own preprocessing exactly as `digitnet predict` does; at most one request is in
// flight, and the newest drawing is sent as soon as it returns. The answer comes back with
// every column's activations and the strongest links, which the network canvas draws.
"use strict";

const $ = (id) => document.getElementById(id);
const PEN = 18;                 // stroke width on the 280-px pad: MNIST's strokes are ~1/10 of a digit's height
const MAX_UPLOAD = 2 * 1024 * 1024;
const NET_HEIGHT = 430;         // the network canvas's height in CSS pixels
const POS = [252, 98, 85];      // red: a positive weight / contribution
const NEG = [88, 166, 255];     // blue: a negative one

const state = {
  models: [],            // GET /api/models
  model: null,           // GET /api/models/ID: the chosen model and its columns
  strokes: [],           // each a list of [x, y] on the 280×280 pad
  stroke: null,          // the stroke being drawn
  under: null,           // {canvas, kind: "upload"|"noise"|"dream", blob?, pixels?, digit?}: the picture under the strokes
  inFlight: false, again: false,
  result: null,          // the last answer shown
  layout: null,          // where each column of the network is drawn
  weights: new Map(),    // "model/layer/unit" -> incoming weights
  hover: null,           // the unit whose weights the tooltip is waiting for
  hoverKey: null,        // the unit (and pixel) under the pointer
  hoverHit: null,        // ... and where it is drawn, for its ring
};

// ---------------------------------------------------------------------------------------------
// The API

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("the digitnet draw server is not answering (was it stopped?)");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: reported below */ }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

const modelQuery = () => `model=${encodeURIComponent(state.model.id)}`;

// ---------------------------------------------------------------------------------------------
// Models

async function loadModels() {
  const listing = await api("/api/models");
  state.models = listing.models;
  const wanted = new URLSearchParams(location.hash.slice(1)).get("model");
  const usable = (id) => state.models.some((m) => m.id === id && !m.error);
  fillModelPicker();
  await chooseModel(usable(wanted) ? wanted : listing.default);
}

function modelLabel(m) {
  if (m.error) return `${m.file} (cannot be loaded)`;
  const where = { "command line": "given", default: "default", shipped: "shipped", "models/": "in models/" }[m.source] || m.source;
  const what = !m.architecture ? "" : m.kind === "dense" ? ` — ${m.architecture.split(",")[0]}` : ` — ${m.kind} net`;
  return `${m.id}${what} · ${where}`;
}

function fillModelPicker() {
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => {
    const option = new Option(modelLabel(m), m.id);
    option.disabled = Boolean(m.error);
    if (m.error) option.title = m.error;
    return option;
  }));
  if (state.model) select.value = state.model.id;
}

async function chooseModel(id) {
  setStatus("");
  const desc = await api(`/api/models/${encodeURIComponent(id)}`);
  state.model = desc;
  const i = state.models.findIndex((m) => m.id === id);
  if (i >= 0) state.models[i] = { ...state.models[i], ...desc, layers: undefined };
  fillModelPicker();
  $("model").value = id;
  history.replaceState(null, "", `#model=${encodeURIComponent(id)}`);
  document.body.dataset.model = id;
  const facts = [desc.architecture, `${desc.parameters.toLocaleString("en")} parameters`];
  if (desc.test_accuracy != null) facts.push(`${(100 * desc.test_accuracy).toFixed(2)}% on its test digits`);
  $("model-info").textContent = facts.join(" · ");
  $("scores-hint").textContent = desc.output === "softmax"
    ? "Scores: the output layer's softmax, which sums to 100%."
    : "Scores: the ten output activations divided by their sum (sigmoid outputs need not add up to 1).";
  const digit = $("dream-digit").value;
  $("dream-digit").replaceChildren(...desc.classes.map((name, k) => new Option(name, k)));
  if (digit && Number(digit) < desc.classes.length) $("dream-digit").value = digit;
  buildBars(desc.classes);
  state.weights.clear();
  state.result = null;
  layoutNetwork();
  drawNetwork();
  drawAttention();
  if (state.under && state.under.kind === "dream") {
    dream(state.under.digit);          // a dream belongs to its network: dream again
  } else {
    predict();
  }
}

// ---------------------------------------------------------------------------------------------
// The pad

const pad = $("pad");
const padCtx = pad.getContext("2d");

function drawStroke(ctx, points) {
  ctx.strokeStyle = ctx.fillStyle = "#fff";
  ctx.lineWidth = PEN;
  ctx.lineCap = ctx.lineJoin = "round";
  if (points.length === 1) {
    ctx.beginPath();
    ctx.arc(points[0][0], points[0][1], PEN / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(points[0][0], points[0][1]);
  for (let i = 1; i < points.length - 1; i++) {   // through the midpoints: a smooth curve
    const mx = (points[i][0] + points[i + 1][0]) / 2, my = (points[i][1] + points[i + 1][1]) / 2;
    ctx.quadraticCurveTo(points[i][0], points[i][1], mx, my);
  }
  const last = points[points.length - 1];
  ctx.lineTo(last[0], last[1]);
  ctx.stroke();
}

function renderPad() {
  padCtx.fillStyle = "#000";
  padCtx.fillRect(0, 0, pad.width, pad.height);
  if (state.under) {
    const c = state.under.canvas;
    const s = Math.min(pad.width / c.width, pad.height / c.height);
    const w = c.width * s, h = c.height * s;
    padCtx.imageSmoothingEnabled = state.under.kind === "upload";
    padCtx.drawImage(c, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }
  for (const s of state.strokes) drawStroke(padCtx, s);
  if (state.stroke) drawStroke(padCtx, state.stroke);
  $("pad-hint").classList.toggle("gone", Boolean(state.under || state.strokes.length || state.stroke));
}

function padPoint(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * pad.width / r.width, (event.clientY - r.top) * pad.height / r.height];
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  if (state.under && state.under.kind !== "upload") state.under = null;   // drawing replaces noise or a dream
  state.stroke = [padPoint(event)];
  renderPad();
  predict();
});

pad.addEventListener("pointermove", (event) => {
  if (!state.stroke) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of (events.length ? events : [event])) state.stroke.push(padPoint(e));
  renderPad();
  predict();
});

function endStroke() {
  if (!state.stroke) return;
  state.strokes.push(state.stroke);
  state.stroke = null;
  renderPad();
  predict();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function undo() {
  if (state.strokes.length) state.strokes.pop();
  else state.under = null;
  renderPad();
  predict();
}

function clearPad() {
  state.strokes = [];
  state.stroke = null;
  state.under = null;
  setNote("");
  renderPad();
  predict();
}

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clearPad);
document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLSelectElement) return;
  if ((event.ctrlKey || event.metaKey) && event.key === "z") { event.preventDefault(); undo(); }
  if (event.key === "Escape") clearPad();
});

// Uploads: the file's own bytes go to the server (its loader reads PNG, JPEG, …); only a file
// above the server's 2 MB limit is scaled down here first.
async function useImageFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus("That is not an image file.", true);
    return;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    setStatus("The browser cannot read that image; try a PNG or a JPEG.", true);
    return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  let blob = file;
  if (file.size > MAX_UPLOAD) {
    const s = Math.min(1, 1024 / Math.max(bitmap.width, bitmap.height));
    const small = document.createElement("canvas");
    small.width = Math.round(bitmap.width * s);
    small.height = Math.round(bitmap.height * s);
    small.getContext("2d").drawImage(bitmap, 0, 0, small.width, small.height);
    blob = await new Promise((resolve) => small.toBlob(resolve, "image/png"));
    setNote(`The image was ${(file.size / 1e6).toFixed(1)} MB; it was scaled down to ${small.width}×${small.height} before sending.`);
  } else {
    setNote("");
  }
  state.strokes = [];
  state.under = { canvas, kind: "upload", blob };
  renderPad();
  predict();
}

$("file").addEventListener("change", (event) => {
  useImageFile(event.target.files[0]);
  event.target.value = "";
});
document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData ? event.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
  if (item) { event.preventDefault(); useImageFile(item.getAsFile()); }
});
const padWrap = $("pad-wrap");
padWrap.addEventListener("dragover", (event) => { event.preventDefault(); padWrap.classList.add("dragging"); });
padWrap.addEventListener("dragleave", () => padWrap.classList.remove("dragging"));
padWrap.addEventListener("drop", (event) => {
  event.preventDefault();
  padWrap.classList.remove("dragging");
  useImageFile(event.dataTransfer.files[0]);
});

// ---------------------------------------------------------------------------------------------
// Asking the network

function padIsEmpty() {
  return !state.under && !state.strokes.length && !(state.stroke && state.stroke.length);
}

async function request() {
  // What to send for what is on the pad: the picture alone (its own bytes or pixels), or the pad as a PNG.
  const u = state.under;
  const drawn = state.strokes.length || state.stroke;
  if (u && !drawn && u.kind === "upload") {
    return { path: `/api/predict?${modelQuery()}`, type: u.blob.type || "application/octet-stream", body: u.blob };
  }
  if (u && !drawn && u.pixels) {
    return { path: "/api/predict", type: "application/json", body: JSON.stringify({ model: state.model.id, pixels: u.pixels }) };
  }
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  return { path: `/api/predict?${modelQuery()}`, type: "image/png", body: blob };
}

function predict() {
  if (!state.model) return;
  if (state.inFlight) { state.again = true; return; }
  send();
}

async function send() {
  state.inFlight = true;
  state.again = false;
  document.body.dataset.busy = "1";
  const model = state.model.id;
  try {
    if (padIsEmpty()) {
      showEmpty();
      return;
    }
    const req = await request();
    const t0 = performance.now();
    const result = await api(req.path, { method: "POST", headers: { "Content-Type": req.type }, body: req.body });
    if (model === state.model.id) show(result, performance.now() - t0);
  } catch (e) {
    if (model === state.model.id) showProblem(e.message);
  } finally {
    state.inFlight = false;
    if (state.again) send();
    else document.body.dataset.busy = "0";
  }
}

// ---------------------------------------------------------------------------------------------
// The video's experiments

$("noise").addEventListener("click", async () => {
  const button = $("noise");
  button.disabled = true;
  try {
    const seed = Math.floor(Math.random() * 2 ** 31);
    const r = await api("/api/noise", { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify({ model: state.model.id, seed }) });
    state.strokes = [];
    state.under = { canvas: pixelCanvas(r.input, r.input_shape), kind: "noise", pixels: r.input };
    renderPad();
    show(r, null);
    const n = r.noise;
    setNote(`Random pixels, and still it answers “${r.name}”, ${pct(r.confidence)} sure. `
      + `Over ${n.samples} noise images it said “${n.most_often_name}” most often (${n.class_counts[n.most_often]} times), `
      + `${pct(n.mean_confidence)} sure on average.`);
  } catch (e) {
    showProblem(e.message);
  } finally {
    button.disabled = false;
  }
});

async function dream(digit) {
  const button = $("dream");
  button.disabled = true;
  setNote(`Dreaming a ${state.model.classes[digit]}: 200 steps of gradient ascent on the pixels…`);
  try {
    const r = await api("/api/dream", { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify({ model: state.model.id, digit }) });
    state.strokes = [];
    state.under = { canvas: pixelCanvas(r.input, r.input_shape), kind: "dream", pixels: r.input, digit };
    renderPad();
    show(r, null);
    const d = r.dream;
    setNote(`The image that excites output neuron “${d.name}” most: the network is ${pct(r.scores[digit])} sure it is a ${d.name} `
      + `(output ${d.probability.toFixed(3)}, from ${d.start_probability.toFixed(3)} on a black image). Does it look like one?`);
  } catch (e) {
    showProblem(e.message);
  } finally {
    button.disabled = false;
  }
}
$("dream").addEventListener("click", () => dream(Number($("dream-digit").value)));

// ---------------------------------------------------------------------------------------------
// Showing the answer

const pct = (p) => (p >= 0.9995 ? ">99.9%" : `${(100 * p).toFixed(p > 0.995 ? 1 : 0)}%`);

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function setNote(text) { $("experiment-note").textContent = text; }

function buildBars(classes) {
  const bars = $("bars");
  bars.replaceChildren();
  classes.forEach((name) => {
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "pct";
    bars.append(label, track, value);
  });
}

function pixelCanvas(values, shape) {
  const [h, w] = shape;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = Math.round(255 * Math.max(0, Math.min(1, values[i])));
    img.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

function seenHint() {
  const u = state.under;
  if (!state.model) return "28 × 28 = 784 numbers from 0 (black) to 1 (white): the first layer's neurons.";
  if (u && u.pixels && !state.strokes.length) {
    return u.kind === "noise" ? "Random pixels, given to the network as they are: 784 numbers from 0 to 1."
      : "The dreamed pixels, given to the network as they are: 784 numbers from 0 to 1.";
  }
  return state.model.preprocessing === "mnist"
    ? "Your ink, cropped, scaled so its longer side is 20 pixels and centred by its centre of mass in 28 × 28 — "
      + "as MNIST's digits were, and exactly as digitnet predict does. 784 numbers from 0 (black) to 1 (white)."
    : "Your picture, merely resized to 28 × 28 (this model was trained without MNIST's preprocessing).";
}

function showSeen(values, shape) {
  $("seen-hint").textContent = seenHint();
  const seen = $("seen");
  const ctx = seen.getContext("2d");
  if (!values) {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, seen.width, seen.height);
    return;
  }
  seen.width = shape[1];
  seen.height = shape[0];
  ctx.drawImage(pixelCanvas(values, shape), 0, 0);
}

function show(result, ms) {
  state.result = result;
  const answer = $("answer");
  answer.classList.remove("empty");
  answer.classList.toggle("unsure", result.confidence < 0.6);
  $("label").textContent = result.name;
  $("confidence").textContent = result.confidence < 0.6 ? `${pct(result.confidence)} — unsure` : `${pct(result.confidence)} sure`;
  $("timing").textContent = ms == null ? "" : `answered in ${Math.round(ms)} ms`;
  const rows = $("bars").children;
  result.scores.forEach((p, k) => {
    const win = k === result.label;
    for (const el of [rows[3 * k], rows[3 * k + 1], rows[3 * k + 2]]) el.classList.toggle("win", win);
    rows[3 * k + 1].firstChild.style.width = `${(100 * p).toFixed(1)}%`;
    rows[3 * k + 2].textContent = pct(p);
  });
  answer.dataset.label = result.name;
  answer.dataset.model = result.model;
  answer.dataset.count = String(Number(answer.dataset.count || 0) + 1);
  setStatus("");
  showSeen(result.input, result.input_shape);
  drawNetwork();
  drawAttention();
}

function showEmpty() {
  state.result = null;
  const answer = $("answer");
  answer.classList.add("empty");
  answer.classList.remove("unsure");
  delete answer.dataset.label;
  $("label").textContent = "?";
  $("confidence").textContent = "draw a digit";
  $("timing").textContent = "";
  for (const el of $("bars").children) {
    el.classList.remove("win");
    if (el.className === "track") el.firstChild.style.width = "0";
    if (el.className === "pct") el.textContent = "";
  }
  showSeen(null);
  drawNetwork();
  drawAttention();
}

function showProblem(message) {
  if (/no digit found/.test(message)) {
    showEmpty();
    setStatus("No ink stands out from the background yet: draw a bolder digit.");
    return;
  }
  setStatus(message, true);
}

// ---------------------------------------------------------------------------------------------
// The network: one column per layer the page shows (input, activations, pooling), drawn on a
// canvas; links between columns are the strongest |weight × activation| for this input.

const net = $("net");
const netCtx = net.getContext("2d");

function gridFor(count, h, w, height) {
  // Tiles of h×w maps in a grid that fits the height: the fewest columns that keep them legible.
  const gap = 4;
  const largest = Math.min(height * 0.62, h * 7, 200, 220 * h / w);     // tokens (T × D) are wide: cap the width
  const legible = Math.max(16, Math.min(h * 2.5, 36));
  for (let cols = 1; ; cols++) {
    const rows = Math.ceil(count / cols);
    const tile = Math.min(largest, Math.floor((height - gap * (rows - 1)) / rows));
    if (tile >= legible || cols >= count) {
      return { cols, rows, tileW: Math.max(4, tile) * w / h, tileH: Math.max(4, tile), gap };
    }
  }
}

function layoutNetwork() {
  const views = state.model.layers;
  const height = NET_HEIGHT - 60;            // room for titles below
  const top = 14;
  const columns = views.map((v, index) => {
    const col = { index, view: v, last: index === views.length - 1 };
    if (v.kind === "neurons") {
      const n = v.shape[0];
      const cols = Math.ceil(n / Math.floor(height / 12));
      const rows = Math.ceil(n / cols);
      col.step = Math.min(height / rows, 36);
      col.r = Math.max(2.2, col.step * 0.37);
      col.cols = cols;
      col.rows = rows;
      col.w = cols * col.step;
      col.h = rows * col.step;
      col.extra = col.last ? 70 : 0;           // class names and scores beside the output
    } else {
      const [c, h, w] = v.shape.length === 2 ? [1, ...v.shape] : v.shape;
      Object.assign(col, { maps: c, mapH: h, mapW: w }, gridFor(c, h, w, height));
      col.w = col.cols * col.tileW + (col.cols - 1) * col.gap;
      col.h = col.rows * col.tileH + (col.rows - 1) * col.gap;
      col.extra = 0;
    }
    return col;
  });
  const wrap = $("net-wrap");
  const width = wrap.clientWidth || 1000;
  const content = columns.reduce((s, c) => s + c.w + c.extra, 0);
  const margin = 40;
  const gap = Math.max(56, (width - 2 * margin - content) / Math.max(1, columns.length - 1));
  let x = margin;
  for (const c of columns) {
    c.x = x;
    c.y = top + (height - c.h) / 2;
    x += c.w + c.extra + gap;
  }
  const total = Math.max(width, x - gap + margin);
  const dpr = window.devicePixelRatio || 1;
  net.width = Math.round(total * dpr);
  net.height = Math.round(NET_HEIGHT * dpr);
  net.style.width = `${total}px`;
  net.style.height = `${NET_HEIGHT}px`;
  netCtx.setTransform(dpr, 0, 0, dpr, 0, 0);
  state.layout = { columns, height, top };
  state.hoverHit = null;
  net.dataset.columns = views.map((v) => v.kind).join(",");
}

function unitCenter(col, i) {
  // Where unit i of a column sits: a neuron's centre, or a pixel of a feature map.
  if (col.view.kind === "neurons") {
    const cx = Math.floor(i / col.rows), cy = i % col.rows;
    return [col.x + (cx + 0.5) * col.step, col.y + (cy + 0.5) * col.step];
  }
  const per = col.mapH * col.mapW;
  const m = Math.floor(i / per), p = i % per;
  const [tx, ty] = tileOrigin(col, m);
  return [tx + ((p % col.mapW) + 0.5) * col.tileW / col.mapW, ty + (Math.floor(p / col.mapW) + 0.5) * col.tileH / col.mapH];
}

function tileOrigin(col, m) {
  return [col.x + (m % col.cols) * (col.tileW + col.gap), col.y + Math.floor(m / col.cols) * (col.tileH + col.gap)];
}

function scaleOf(values) {
  // Activations in [0, 1] are drawn as they are; others (ReLU) relative to the column's largest.
  let lo = 0, hi = 0;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return lo >= 0 && hi <= 1 ? 1 : Math.max(hi, -lo) || 1;
}

const mapCanvas = document.createElement("canvas");

function drawMap(x, y, w, h, values, offset, mh, mw, scale) {
  mapCanvas.width = mw;
  mapCanvas.height = mh;
  const mctx = mapCanvas.getContext("2d");
  const img = mctx.createImageData(mw, mh);
  for (let i = 0; i < mw * mh; i++) {
    const v = values ? values[offset + i] / scale : 0;
    const g = Math.round(255 * Math.max(0, Math.min(1, v)));
    const b = v < 0 ? Math.round(255 * Math.min(1, -v)) : 0;     // a negative value (tanh) in blue
    img.data.set([g, g, b || g, 255], 4 * i);
  }
  mctx.putImageData(img, 0, 0);
  netCtx.imageSmoothingEnabled = false;
  netCtx.drawImage(mapCanvas, x, y, w, h);
}

function drawNetwork() {
  if (!state.layout) return;
  const { columns, height, top } = state.layout;
  const r = state.result;
  const acts = r && r.activations ? r.activations.map((a) => a.values) : null;
  netCtx.clearRect(0, 0, net.width, net.height);

  // links first, under the neurons
  if (r && r.links) {
    for (const group of r.links) {
      const from = columns[group.from], to = columns[group.to];
      let max = 0;
      for (const [, , c] of group.links) max = Math.max(max, Math.abs(c));
      for (let k = group.links.length - 1; k >= 0; k--) {        // weakest first, strongest on top
        const [s, d, c] = group.links[k];
        const a = Math.abs(c) / (max || 1);
        const [x0, y0] = unitCenter(from, s), [x1, y1] = unitCenter(to, d);
        const [cr, cg, cb] = c >= 0 ? POS : NEG;
        netCtx.strokeStyle = `rgba(${cr},${cg},${cb},${(0.12 + 0.78 * a).toFixed(3)})`;
        netCtx.lineWidth = 0.6 + 1.8 * a;
        netCtx.beginPath();
        netCtx.moveTo(x0, y0);
        netCtx.lineTo(x1, y1);
        netCtx.stroke();
      }
    }
  }

  columns.forEach((col, j) => {
    const values = acts ? acts[j] : null;
    const scale = values ? scaleOf(values) : 1;
    if (col.view.kind === "neurons") {
      const n = col.view.shape[0];
      for (let i = 0; i < n; i++) {
        const [cx, cy] = unitCenter(col, i);
        const v = values ? values[i] / scale : 0;
        netCtx.beginPath();
        netCtx.arc(cx, cy, col.r, 0, 2 * Math.PI);
        netCtx.fillStyle = "#0b0f14";
        netCtx.fill();
        if (v > 0) {
          netCtx.fillStyle = `rgba(255,255,255,${Math.min(1, v).toFixed(3)})`;
          netCtx.fill();
        } else if (v < 0) {
          netCtx.fillStyle = `rgba(${NEG.join(",")},${Math.min(1, -v).toFixed(3)})`;
          netCtx.fill();
        }
        const winner = col.last && r && i === r.label;
        netCtx.lineWidth = winner ? 2.5 : 1;
        netCtx.strokeStyle = winner ? "#ffd35a" : "#6b7a8c";
        netCtx.stroke();
        if (col.last) {
          netCtx.font = `${winner ? "bold " : ""}14px system-ui, sans-serif`;
          netCtx.textBaseline = "middle";
          netCtx.textAlign = "left";
          netCtx.fillStyle = winner ? "#ffd35a" : "#c7d0da";
          netCtx.fillText(state.model.classes[i], cx + col.r + 8, cy);
          if (values) {
            netCtx.font = "11px system-ui, sans-serif";
            netCtx.fillStyle = winner ? "#ffd35a" : "#8b98a8";
            netCtx.fillText(values[i].toFixed(2), cx + col.r + 26, cy);
          }
        }
      }
    } else {
      for (let m = 0; m < col.maps; m++) {
        const [tx, ty] = tileOrigin(col, m);
        drawMap(tx, ty, col.tileW, col.tileH, values, m * col.mapH * col.mapW, col.mapH, col.mapW, scale);
        netCtx.strokeStyle = "#334155";
        netCtx.lineWidth = 1;
        netCtx.strokeRect(tx - 0.5, ty - 0.5, col.tileW + 1, col.tileH + 1);
      }
    }
    // the caption: size on the first line, how it is computed on the second
    const [size, how] = col.view.title.split(" · ");
    const cx = col.x + col.w / 2;
    netCtx.textAlign = "center";
    netCtx.textBaseline = "top";
    netCtx.fillStyle = "#c7d0da";
    netCtx.font = "12px system-ui, sans-serif";
    netCtx.fillText(size, cx, top + height + 12);
    if (how) {
      netCtx.fillStyle = "#8b98a8";
      netCtx.font = "11px system-ui, sans-serif";
      netCtx.fillText(how, cx, top + height + 28);
    }
  });

  const hit = state.hoverHit;
  if (hit && columns[hit.col.index] === hit.col) {      // the unit under the pointer
    netCtx.strokeStyle = "#58c4dd";
    netCtx.lineWidth = 2;
    netCtx.beginPath();
    if (hit.col.view.kind === "neurons") {
      const [cx, cy] = unitCenter(hit.col, hit.unit);
      netCtx.arc(cx, cy, hit.col.r + 3, 0, 2 * Math.PI);
    } else {
      const [tx, ty] = tileOrigin(hit.col, hit.col.view.shape.length === 2 ? 0 : hit.unit);
      netCtx.rect(tx - 2, ty - 2, hit.col.tileW + 4, hit.col.tileH + 4);
    }
    netCtx.stroke();
  }

  if (!r) {
    netCtx.textAlign = "center";
    netCtx.textBaseline = "middle";
    netCtx.fillStyle = "#5d6b7c";
    netCtx.font = "14px system-ui, sans-serif";
    const c0 = columns[0];
    netCtx.fillText("draw a digit to light it up", c0.x + c0.w / 2, c0.y + c0.h + 18);
  }
}

// A transformer's attention: for each block, the class token's attention over the patches
// (the mean over its heads) tinted over the input the network saw, the patch grid drawn; then
// the rollout through every block. Each tile is scaled to its own largest weight.

const ATTENTION_TILE = 140;         // CSS pixels per 28×28 tile

function drawAttention() {
  const panel = $("attention");
  const r = state.result;
  const a = r && r.attention;
  panel.hidden = !a;
  if (!a) { delete panel.dataset.blocks; return; }
  const tiles = [...a.blocks.map((b) => ({ values: b.mean, title: `block ${b.block}`, sub: `mean of ${b.heads} heads` })),
                 { values: a.rollout, title: "rollout", sub: "through every block" }];
  const [h, w] = r.input_shape;
  const [rows, cols] = a.grid;
  $("attention-hint").textContent = `The class token is the one the answer is read from. Each picture tints the ${rows} × ${cols} `
    + `patches (${a.patch} × ${a.patch} pixels each) by how much of its attention each one gets; the rollout follows `
    + "the attention through all the blocks, residual paths included.";
  const canvas = $("attention-maps");
  const gap = 18, tileH = ATTENTION_TILE, tileW = ATTENTION_TILE * w / h, caption = 36;
  const width = tiles.length * tileW + (tiles.length - 1) * gap;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round((tileH + caption) * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${tileH + caption}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, tileH + caption);
  const input = pixelCanvas(r.input, r.input_shape);
  const [ar, ag, ab] = [88, 196, 221];          // the page's accent
  tiles.forEach((t, k) => {
    const x0 = k * (tileW + gap);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = 0.55;                     // the digit, dimmed, under the tint
    ctx.drawImage(input, x0, 0, tileW, tileH);
    ctx.globalAlpha = 1;
    const max = Math.max(...t.values) || 1;
    const pw = tileW / cols, ph = tileH / rows;
    t.values.forEach((v, q) => {
      const px = x0 + (q % cols) * pw, py = Math.floor(q / cols) * ph;
      ctx.fillStyle = `rgba(${ar},${ag},${ab},${(0.75 * Math.max(0, v) / max).toFixed(3)})`;
      ctx.fillRect(px, py, pw, ph);
    });
    ctx.strokeStyle = "rgba(51,65,85,0.9)";
    ctx.lineWidth = 1;
    for (let c = 0; c <= cols; c++) { ctx.beginPath(); ctx.moveTo(x0 + c * pw, 0); ctx.lineTo(x0 + c * pw, tileH); ctx.stroke(); }
    for (let q = 0; q <= rows; q++) { ctx.beginPath(); ctx.moveTo(x0, q * ph); ctx.lineTo(x0 + tileW, q * ph); ctx.stroke(); }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.fillStyle = "#c7d0da";
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(t.title, x0 + tileW / 2, tileH + 6);
    ctx.fillStyle = "#8b98a8";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(t.sub, x0 + tileW / 2, tileH + 21);
  });
  panel.dataset.blocks = String(a.blocks.length);
}

// Hovering: which unit is under the pointer, its value, and what feeds it.
function unitAt(x, y) {
  for (const col of state.layout.columns) {
    if (x < col.x - 6 || x > col.x + col.w + 6 || y < col.y - 6 || y > col.y + col.h + 6) continue;
    if (col.view.kind === "neurons") {
      const cx = Math.floor((x - col.x) / col.step), cy = Math.floor((y - col.y) / col.step);
      const i = cx * col.rows + cy;
      if (cx < 0 || cy < 0 || cy >= col.rows || i >= col.view.shape[0]) return null;
      return { col, unit: i };
    }
    const mx = Math.floor((x - col.x) / (col.tileW + col.gap)), my = Math.floor((y - col.y) / (col.tileH + col.gap));
    const m = my * col.cols + mx;
    if (mx < 0 || my < 0 || mx >= col.cols || m >= col.maps) return null;
    const [tx, ty] = tileOrigin(col, m);
    const px = Math.floor((x - tx) / col.tileW * col.mapW), py = Math.floor((y - ty) / col.tileH * col.mapH);
    if (px < 0 || py < 0 || px >= col.mapW || py >= col.mapH) return null;
    return { col, unit: m, pixel: [py, px] };
  }
  return null;
}

async function incoming(layer, unit) {
  const key = `${state.model.id}/${layer}/${unit}`;
  if (!state.weights.has(key)) {
    state.weights.set(key, api(`/api/models/${encodeURIComponent(state.model.id)}/weights?layer=${layer}&unit=${unit}`));
  }
  return state.weights.get(key);
}

function heatMap(canvas, values, shape, box) {
  // Weights as a picture: red positive, blue negative, black zero, scaled by the largest |w|.
  let max = 0;
  for (const v of values) max = Math.max(max, Math.abs(v));
  let maps, h, w;
  if (shape.length === 3) [maps, h, w] = shape;
  else if (shape.length === 2) [maps, h, w] = [1, ...shape];
  else { maps = 1; w = Math.min(shape[0], 16); h = Math.ceil(shape[0] / w); }
  const cols = Math.min(maps, Math.max(1, Math.round(Math.sqrt(maps * 1.6))));
  const rows = Math.ceil(maps / cols);
  const cell = Math.max(2, Math.floor(Math.min(box / (cols * w), box / (rows * h))));
  const gap = maps > 1 ? 3 : 0;
  canvas.width = cols * w * cell + (cols - 1) * gap;
  canvas.height = rows * h * cell + (rows - 1) * gap;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#0b0f14";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let m = 0; m < maps; m++) {
    const ox = (m % cols) * (w * cell + gap), oy = Math.floor(m / cols) * (h * cell + gap);
    for (let i = 0; i < h * w; i++) {
      const k = m * h * w + i;
      if (k >= values.length) break;
      const t = values[k] / (max || 1);
      const [cr, cg, cb] = t >= 0 ? POS : NEG;
      const a = Math.min(1, Math.abs(t));
      ctx.fillStyle = `rgb(${Math.round(cr * a)},${Math.round(cg * a)},${Math.round(cb * a)})`;
      ctx.fillRect(ox + (i % w) * cell, oy + Math.floor(i / w) * cell, cell, cell);
    }
  }
}

function describeUnit(hit) {
  const v = hit.col.view;
  const j = hit.col.index;
  if (v.kind === "image") return { title: `input pixel (${hit.pixel[0]}, ${hit.pixel[1]})`, index: hit.pixel[0] * v.shape[1] + hit.pixel[1] };
  if (v.kind === "tokens") {
    return { title: `layer ${j} · token ${hit.pixel[0]} · feature ${hit.pixel[1]}`, index: hit.pixel[0] * v.shape[1] + hit.pixel[1] };
  }
  if (v.kind === "maps") {
    const [, h, w] = v.shape;
    return { title: `layer ${j} · map ${hit.unit} · pixel (${hit.pixel[0]}, ${hit.pixel[1]})`,
             index: hit.unit * h * w + hit.pixel[0] * w + hit.pixel[1] };
  }
  const name = hit.col.last ? `output neuron “${state.model.classes[hit.unit]}”` : `layer ${j} · neuron ${hit.unit}`;
  return { title: name, index: hit.unit };
}

async function showTip(hit, x, y) {
  const tip = $("tip");
  const d = describeUnit(hit);
  const v = hit.col.view;
  $("tip-title").textContent = d.title;
  const values = state.result && state.result.activations ? state.result.activations[hit.col.index].values : null;
  $("tip-value").textContent = values ? `activation ${values[d.index].toFixed(3)}` : "no input yet";
  const canvas = $("tip-weights");
  canvas.hidden = true;
  $("tip-note").textContent = v.has_weights ? "loading its weights…"
    : v.kind === "image" ? "a pixel: the input itself"
    : v.name.startsWith("pool") ? "no weights of its own: the largest value of each window in the layer before"
    : "no single weight picture for this layer";
  tip.hidden = false;
  placeTip(x, y);
  const key = `${hit.col.index}/${hit.unit}`;
  state.hover = key;
  if (!v.has_weights) return;
  try {
    const w = await incoming(hit.col.index, hit.unit);
    if (state.hover !== key) return;
    heatMap(canvas, w.values, w.shape, 168);
    canvas.hidden = false;
    const what = w.over === "pixels" ? "its weights from the 784 pixels, as an image"
      : w.over === "filter" ? `its filter: ${w.shape.join(" × ")} weights slid over the maps below`
      : `its weights from the ${w.values.length} units of ${w.over}`;
    $("tip-note").textContent = `${what} · red +, blue − · bias ${w.bias.toFixed(3)}`;
    placeTip(x, y);
  } catch (e) {
    $("tip-note").textContent = e.message;
  }
}

function placeTip(x, y) {
  const tip = $("tip");
  const wrap = $("net-wrap");
  let left = x + 18;
  if (left + tip.offsetWidth > wrap.scrollLeft + wrap.clientWidth) left = Math.max(wrap.scrollLeft, x - tip.offsetWidth - 18);
  tip.style.left = `${left}px`;
  tip.style.top = `${Math.max(0, Math.min(y + 12, NET_HEIGHT - tip.offsetHeight))}px`;
}

net.addEventListener("mousemove", (event) => {
  if (!state.layout) return;
  const rect = net.getBoundingClientRect();
  const x = event.clientX - rect.left, y = event.clientY - rect.top;
  const hit = unitAt(x, y);
  if (!hit) { leaveNetwork(); return; }
  const key = `${hit.col.index}/${hit.unit}/${hit.pixel || ""}`;
  if (key === state.hoverKey && !$("tip").hidden) { placeTip(x, y); return; }
  state.hoverKey = key;
  const moved = !state.hoverHit || state.hoverHit.col !== hit.col || state.hoverHit.unit !== hit.unit;
  state.hoverHit = hit;
  if (moved) drawNetwork();
  showTip(hit, x, y);
});

function leaveNetwork() {
  $("tip").hidden = true;
  state.hover = state.hoverKey = null;
  if (state.hoverHit) {
    state.hoverHit = null;
    drawNetwork();
  }
}
net.addEventListener("mouseleave", leaveNetwork);

window.addEventListener("resize", () => {
  if (!state.model) return;
  layoutNetwork();
  drawNetwork();
});

$("model").addEventListener("change", async (event) => {
  try {
    await chooseModel(event.target.value);
  } catch (e) {                        // a model that cannot be loaded: say why, keep the one shown
    setStatus(e.message, true);
    try { state.models = (await api("/api/models")).models; } catch (ignored) { /* the status says enough */ }
    fillModelPicker();
  }
});

renderPad();
showSeen(null);
loadModels().catch((e) => setStatus(e.message, true));
