// The threshold review page: everything is computed here from the scores embedded in the
// page, so a slider move needs no server and no network. Decision rule as in the runtime:
// score > threshold -> rejected.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("review-data").textContent);
  const $ = (id) => document.getElementById(id);
  const Z95 = 1.959963984540054;
  const COLOURS = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f"];
  const NORMAL_COLOUR = "#1f77b4";
  const parts = D.parts;
  const types = D.defect_types;
  const typeColour = {};
  types.forEach((t, i) => { typeColour[t] = COLOURS[i % COLOURS.length]; });
  const stored = D.thresholds.image;
  const normals = parts.filter((p) => p.label === 0);
  const defects = parts.filter((p) => p.label === 1);
  const unlabelled = parts.filter((p) => p.label === null);

  // Wilson score interval: stays inside [0, 1] and is honest at 0 rejects, where the
  // normal approximation would claim zero uncertainty.
  function wilson(k, n) {
    if (n === 0) return [NaN, NaN];
    const p = k / n, z2 = Z95 * Z95;
    const denom = 1 + z2 / n;
    const centre = (p + z2 / (2 * n)) / denom;
    const half = (Z95 * Math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / denom;
    return [Math.max(0, centre - half), Math.min(1, centre + half)];
  }

  function counts(t) {
    const c = { true_reject: 0, false_reject: 0, false_accept: 0, true_accept: 0, rejected_unlabelled: 0 };
    const perType = {};
    types.forEach((ty) => { perType[ty] = { n: 0, hit: 0 }; });
    for (const p of parts) {
      const rej = p.score > t;
      if (p.label === 1) {
        c[rej ? "true_reject" : "false_accept"]++;
        perType[p.type].n++;
        if (rej) perType[p.type].hit++;
      } else if (p.label === 0) {
        c[rej ? "false_reject" : "true_accept"]++;
      } else if (rej) {
        c.rejected_unlabelled++;
      }
    }
    return { c, perType };
  }

  const fmt = (x, d) => (Number.isFinite(x) ? x.toFixed(d) : "n/a");
  const pct = (x) => (Number.isFinite(x) ? (100 * x).toFixed(2) + " %" : "n/a");
  function show(id, value, text) {
    const el = $(id);
    if (!el) return;
    el.dataset.value = Number.isFinite(value) ? String(value) : "";
    el.textContent = text;
  }

  // ---- histogram of scores, one series per class / defect type ----
  const scores = parts.map((p) => p.score);
  const sMin = Math.min(...scores), sMax = Math.max(...scores);
  const pad = (sMax - sMin) * 0.05 || Math.abs(sMax) * 0.05 || 1;
  const lo = Math.min(sMin, stored) - pad, hi = Math.max(sMax, stored) + pad;

  function series() {
    const out = [];
    if (normals.length) out.push({ name: "normal", colour: NORMAL_COLOUR, items: normals });
    types.forEach((ty) => out.push({ name: ty, colour: typeColour[ty], items: defects.filter((p) => p.type === ty) }));
    if (unlabelled.length) out.push({ name: "unlabelled", colour: "#555", items: unlabelled });
    return out;
  }
  const SERIES = series();
  const BINS = 40;

  function drawHistogram(t) {
    const cv = $("hist"), g = cv.getContext("2d");
    const W = cv.width, H = cv.height, L = 48, R = 12, T = 12, B = 34;
    g.clearRect(0, 0, W, H);
    const x = (v) => L + ((v - lo) / (hi - lo)) * (W - L - R);
    const binOf = (v) => Math.min(BINS - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * BINS)));
    const hists = SERIES.map((s) => { const h = new Array(BINS).fill(0); s.items.forEach((p) => h[binOf(p.score)]++); return h; });
    const top = Math.max(1, ...hists.map((h) => Math.max(...h)));
    const y = (n) => H - B - (n / top) * (H - B - T);
    const bw = (W - L - R) / BINS;
    hists.forEach((h, k) => {
      g.fillStyle = SERIES[k].colour; g.globalAlpha = 0.45;
      h.forEach((n, i) => { if (n) g.fillRect(L + i * bw + 1, y(n), bw - 2, H - B - y(n)); });
    });
    g.globalAlpha = 1; g.strokeStyle = "#333"; g.fillStyle = "#333"; g.font = "11px sans-serif";
    g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4;
      g.fillText(v.toPrecision(3), x(v) - 14, H - B + 14);
    }
    g.fillText(String(top), 4, T + 8); g.fillText("0", 30, H - B);
    g.fillText("image score (higher = more anomalous)", W / 2 - 90, H - 4);
    g.setLineDash([6, 4]); g.strokeStyle = "#000"; g.lineWidth = 1.5;
    g.beginPath(); g.moveTo(x(stored), T); g.lineTo(x(stored), H - B); g.stroke();
    g.setLineDash([]); g.strokeStyle = "#c00"; g.lineWidth = 2.5;
    g.beginPath(); g.moveTo(x(t), T); g.lineTo(x(t), H - B); g.stroke();
    g.lineWidth = 1;
  }

  function legend() {
    const el = $("hist-legend");
    el.innerHTML = "";
    SERIES.forEach((s) => {
      const span = document.createElement("span");
      span.className = "key";
      span.innerHTML = `<i style="background:${s.colour}"></i>`;
      span.append(`${s.name} (${s.items.length})`);
      el.append(span);
    });
    el.insertAdjacentHTML("beforeend", '<span class="key"><i class="line-stored"></i>stored threshold</span>' +
      '<span class="key"><i class="line-slider"></i>slider threshold</span>');
  }

  // ---- line charts (ROC, PRO) with an optional operating point ----
  function lineChart(cv, curves, xmax, xlabel, ylabel, point) {
    const g = cv.getContext("2d"), W = cv.width, H = cv.height, L = 40, R = 10, T = 10, B = 34;
    g.clearRect(0, 0, W, H);
    const x = (v) => L + (v / xmax) * (W - L - R), y = (v) => H - B - v * (H - B - T);
    g.strokeStyle = "#ccc"; g.beginPath(); g.moveTo(x(0), y(0)); g.lineTo(x(xmax), y(Math.min(1, xmax))); g.stroke();
    g.strokeStyle = "#333"; g.fillStyle = "#333"; g.font = "11px sans-serif";
    g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
    [0, 0.5, 1].forEach((f) => { g.fillText(String(+(f * xmax).toFixed(2)), x(f * xmax) - 8, H - B + 13); g.fillText(String(f), 14, y(f) + 4); });
    g.fillText(xlabel, W / 2 - 40, H - 4);
    g.save(); g.translate(10, H / 2 + 30); g.rotate(-Math.PI / 2); g.fillText(ylabel, 0, 0); g.restore();
    curves.forEach((c) => {
      g.strokeStyle = c.colour; g.lineWidth = c.width || 1.5; g.beginPath();
      c.x.forEach((v, i) => (i ? g.lineTo(x(v), y(c.y[i])) : g.moveTo(x(v), y(c.y[i]))));
      g.stroke();
    });
    g.lineWidth = 1;
    if (point) { g.fillStyle = "#c00"; g.beginPath(); g.arc(x(point[0]), y(point[1]), 5, 0, 2 * Math.PI); g.fill(); }
  }

  function drawRoc(frr, recall) {
    if (!D.roc) return;
    const curves = [{ x: D.roc.all.fpr, y: D.roc.all.tpr, colour: "#000", width: 2 }];
    Object.entries(D.roc.per_type || {}).forEach(([ty, c]) => curves.push({ x: c.fpr, y: c.tpr, colour: typeColour[ty] }));
    lineChart($("roc"), curves, 1, "false-reject rate", "recall", Number.isFinite(recall) ? [frr, recall] : null);
  }

  // ---- thumbnails of the parts that flip ----
  function verdict(p, t) { return p.score > t ? "reject" : "accept"; }
  function card(p, t) {
    const div = document.createElement("div");
    div.className = "card " + (p.label === 1 ? "defect" : p.label === 0 ? "normal" : "unknown");
    const pic = p.picture >= 0 ? D.pictures[p.picture] : null;
    const kind = p.label === 1 ? p.type : p.label === 0 ? "normal" : "unlabelled";
    if (pic) {
      [pic.image, pic.overlay].forEach((src) => {
        const img = document.createElement("img");
        img.src = src; img.alt = p.name; img.addEventListener("click", () => zoom(pic, p));
        div.append(img);
      });
    } else {
      div.insertAdjacentHTML("beforeend", '<div class="nopic">no picture embedded</div>');
    }
    const cap = document.createElement("div");
    cap.className = "cap";
    cap.textContent = `${p.name}\n${kind}, score ${p.score.toPrecision(5)}\n${verdict(p, stored)} → ${verdict(p, t)}`;
    div.append(cap);
    return div;
  }
  const MAX_CARDS = 300;
  function drawFlips(t) {
    const a = Math.min(t, stored), b = Math.max(t, stored);
    const flips = parts.filter((p) => p.score > a && p.score <= b).sort((p, q) => q.score - p.score);
    const box = $("flips");
    box.innerHTML = "";
    flips.slice(0, MAX_CARDS).forEach((p) => box.append(card(p, t)));
    const good = flips.filter((p) => p.label === 0).length, bad = flips.filter((p) => p.label === 1).length;
    const el = $("flip-count");
    el.dataset.value = String(flips.length);
    el.textContent = flips.length === 0 ? "no part changes verdict between the stored and the slider threshold" :
      `${flips.length} part(s) change verdict (${good} normal, ${bad} defect${unlabelled.length ? ", " + (flips.length - good - bad) + " unlabelled" : ""}), highest score first` +
      (flips.length > MAX_CARDS ? `; the first ${MAX_CARDS} shown` : "");
  }

  function zoom(pic, p) {
    $("zoom-image").src = pic.image; $("zoom-overlay").src = pic.overlay;
    $("zoom-caption").textContent = `${p.path} (score ${p.score})`;
    $("zoom").hidden = false;
  }

  // ---- the image threshold ----
  function update(t, from) {
    const { c, perType } = counts(t);
    show("thr-value", t, String(t));
    if (from !== "slider") $("thr-slider").value = String(t);
    if (from !== "number") $("thr-number").value = String(t);
    ["true_reject", "false_reject", "false_accept", "true_accept"].forEach((k) => show("c-" + k, c[k], String(c[k])));
    show("c-rejected_unlabelled", c.rejected_unlabelled, String(c.rejected_unlabelled));
    const nN = c.false_reject + c.true_accept, nD = c.true_reject + c.false_accept;
    const frr = nN ? c.false_reject / nN : NaN;
    const [flo, fhi] = wilson(c.false_reject, nN);
    show("frr", frr, nN ? `${pct(frr)} (${c.false_reject} of ${nN} normals)` : "n/a (no normal images)");
    show("frr-lo", flo, pct(flo)); show("frr-hi", fhi, pct(fhi));
    const recall = nD ? c.true_reject / nD : NaN;
    const flagged = c.true_reject + c.false_reject;
    const precision = nD ? (flagged ? c.true_reject / flagged : 0) : NaN;  // 0/0 -> 0, as ffcore.metrics
    const f1 = nD ? (2 * c.true_reject) / (2 * c.true_reject + c.false_reject + c.false_accept) : NaN;
    show("recall", recall, fmt(recall, 4)); show("precision", precision, fmt(precision, 4)); show("f1", f1, fmt(f1, 4));
    types.forEach((ty) => {
      const r = perType[ty].n ? perType[ty].hit / perType[ty].n : NaN;
      show("recall-" + ty, r, `${fmt(r, 3)} (${perType[ty].hit} of ${perType[ty].n})`);
    });
    drawHistogram(t);
    drawRoc(frr, recall);
    drawFlips(t);
    $("apply-command").textContent = D.apply_command.replace("{IMAGE}", String(t)).replace("{PIXEL}", String(pixelT));
    currentT = t;
  }

  // ---- the pixel threshold on a few example maps ----
  let pixelT = D.thresholds.pixel, currentT = stored;
  const examples = [];
  function drawExample(ex) {
    const g = ex.canvas.getContext("2d"), w = ex.canvas.width, h = ex.canvas.height;
    g.drawImage(ex.img, 0, 0, w, h);
    const level = ((pixelT - ex.lo) / (ex.hi - ex.lo)) * 255;  // the map was quantized to 0..255 over [lo, hi]
    const pic = g.getImageData(0, 0, w, h), m = ex.map.data;
    let flagged = 0;
    for (let i = 0; i < w * h; i++) {
      if (m[4 * i] > level) { pic.data[4 * i] = 255; pic.data[4 * i + 1] >>= 2; pic.data[4 * i + 2] >>= 2; flagged++; }
    }
    g.putImageData(pic, 0, 0);
    ex.label.dataset.value = String(flagged / (w * h));
    ex.label.dataset.name = ex.name;
    ex.label.textContent = `${ex.name}: ${(100 * flagged / (w * h)).toFixed(1)} % of pixels above`;
  }
  function loadExamples() {
    const box = $("pixel-examples");
    D.pixel_examples.forEach((e) => {
      const fig = document.createElement("figure"), canvas = document.createElement("canvas"), cap = document.createElement("figcaption");
      fig.append(canvas, cap); box.append(fig);
      const img = new Image(), mapImg = new Image();
      let pending = 2;
      const ready = () => {
        if (--pending) return;
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const off = document.createElement("canvas");
        off.width = canvas.width; off.height = canvas.height;
        const og = off.getContext("2d"); og.drawImage(mapImg, 0, 0, off.width, off.height);
        const ex = { name: e.name, lo: e.lo, hi: e.hi, canvas, img, label: cap, map: og.getImageData(0, 0, off.width, off.height) };
        examples.push(ex); drawExample(ex);
      };
      img.onload = ready; mapImg.onload = ready;
      img.src = e.image; mapImg.src = e.map;
    });
  }
  function updatePixel(v, from) {
    pixelT = v;
    show("pixel-value", v, String(v));
    if (from !== "slider" && $("pixel-slider")) $("pixel-slider").value = String(v);
    if (from !== "number" && $("pixel-number")) $("pixel-number").value = String(v);
    examples.forEach(drawExample);
    $("apply-command").textContent = D.apply_command.replace("{IMAGE}", String(currentT)).replace("{PIXEL}", String(v));
  }

  function download() {
    const body = JSON.stringify({ schema: "ffrt.thresholds", schema_version: 1, image: currentT, pixel: pixelT,
      source: `review page: chosen by a person on ${D.context.data}`, model_sha256: D.context.model_sha256 }, null, 2);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([body], { type: "application/json" }));
    a.download = "thresholds.json"; a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  // ---- wiring ----
  const slider = $("thr-slider");
  slider.min = String(lo); slider.max = String(hi); slider.step = String((hi - lo) / 2000);
  slider.addEventListener("input", () => update(parseFloat(slider.value), "slider"));
  $("thr-number").addEventListener("input", (e) => { const v = parseFloat(e.target.value); if (Number.isFinite(v)) update(v, "number"); });
  $("thr-reset").addEventListener("click", () => update(stored));
  const ps = $("pixel-slider");
  if (D.pixel_examples.length) {
    ps.min = String(D.pixel_range[0]); ps.max = String(D.pixel_range[1]); ps.step = String((D.pixel_range[1] - D.pixel_range[0]) / 1000);
    ps.addEventListener("input", () => updatePixel(parseFloat(ps.value), "slider"));
    $("pixel-number").addEventListener("input", (e) => { const v = parseFloat(e.target.value); if (Number.isFinite(v)) updatePixel(v, "number"); });
    loadExamples();
  }
  $("download-json").addEventListener("click", download);
  $("zoom").addEventListener("click", () => { $("zoom").hidden = true; });
  if (D.pro) lineChart($("pro"), [{ x: D.pro.fpr, y: D.pro.pro, colour: "#000", width: 2 }], D.pro.fpr_limit, "pixel false-positive rate", "PRO");
  legend();
  updatePixel(pixelT);
  update(stored);
  document.body.dataset.readyMs = String(Math.round(performance.now()));  // from navigation start
  document.body.dataset.ready = "1";
})();
