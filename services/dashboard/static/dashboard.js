// The operator page: polls /api/snapshot and renders it. Data goes in through textContent only.
"use strict";

const STATUSES = ["PENDING", "PROCESSING", "SENT", "DELIVERED", "FAILED", "BOUNCED", "CANCELLED"];
const number = new Intl.NumberFormat("en-US");
let refreshMs = 2000;
let lastOk = null;

function $(id) { return document.getElementById(id); }
function fmt(value) { return value === null || value === undefined ? "n/a" : number.format(value); }
function setText(id, value) { const el = $(id); if (el) el.textContent = value; }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell);
  return tr;
}

function seconds(value) {
  if (value === null || value === undefined) return "n/a";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function renderCounts(counts) {
  setText("total", fmt(counts && counts.total));
  setText("open", fmt(counts && counts.open));
  for (const status of STATUSES) setText(`count-${status}`, fmt(counts && counts.by_status[status]));
  const table = $("channels");
  const head = table.tHead, body = table.tBodies[0];
  head.replaceChildren(row([el("th", "channel"), ...STATUSES.map((s) => el("th", s.toLowerCase(), "num"))]));
  body.replaceChildren();
  if (!counts) { body.appendChild(row([el("td", "n/a", "na")])); return; }
  for (const [channel, byStatus] of Object.entries(counts.by_channel)) {
    body.appendChild(row([el("td", channel), ...STATUSES.map((s) => el("td", fmt(byStatus[s]), "num"))]));
  }
}

function renderThroughput(rate, latency, retries) {
  setText("rate", rate ? rate.per_second.toFixed(1) : "n/a");
  setText("sent-minute", fmt(rate && rate.sent_last_minute));
  setText("failed-minute", fmt(rate && rate.failed_last_minute));
  setText("latency", latency ? `${seconds(latency.p50_s)} / ${seconds(latency.p95_s)}` : "n/a");
  setText("awaiting-retry", fmt(retries && retries.awaiting_retry));
  setText("retryable", fmt(retries && retries.retryable_errors));
  const svg = $("spark");
  svg.replaceChildren();
  if (!rate || !rate.series.length) return;
  const max = Math.max(1, ...rate.series);
  const width = 300 / rate.series.length;
  rate.series.forEach((n, i) => {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const h = (n / max) * 56;
    rect.setAttribute("x", String(i * width + 0.5));
    rect.setAttribute("y", String(60 - h));
    rect.setAttribute("width", String(Math.max(width - 1, 0.5)));
    rect.setAttribute("height", String(h));
    const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
    title.textContent = `${n} finished`;
    rect.appendChild(title);
    svg.appendChild(rect);
  });
}

function renderQueues(queues, totals, dlqSize) {
  setText("dlq-size", fmt(dlqSize));
  setText("queue-totals", totals
    ? `dispatch ${fmt(totals.dispatch)} · responses ${fmt(totals.responses)} · dlq ${fmt(totals.dlq)}` : "");
  const body = $("queues").tBodies[0];
  body.replaceChildren();
  if (!queues.length) { body.appendChild(row([el("td", "n/a", "na")])); return; }
  const max = Math.max(1, ...queues.map((q) => q.ready + q.unacked));
  for (const q of queues) {
    const bar = el("div", null, q.group === "dlq" ? "bar dlq" : "bar");
    bar.style.width = `${((q.ready + q.unacked) / max) * 100}%`;
    const cell = el("td"); cell.style.width = "35%"; cell.appendChild(bar);
    const tr = row([el("td", q.name), el("td", fmt(q.ready), "num"), el("td", fmt(q.unacked), "num"),
                    el("td", fmt(q.consumers), "num"), cell]);
    tr.dataset.queue = q.name;
    body.appendChild(tr);
  }
}

function renderCircuits(circuits) {
  const box = $("circuits");
  box.replaceChildren();
  if (!circuits) { box.appendChild(el("span", "n/a: no circuit breaker source (no provider_circuits table, SWITCHBOARD_DASHBOARD_CIRCUITS_URL unset)", "na")); return; }
  if (!circuits.length) { box.appendChild(el("span", "no provider called yet", "na")); return; }
  const table = el("table");
  const since = circuits.some((c) => c.since);
  table.appendChild(row([el("th", "provider"), el("th", "state"), ...(since ? [el("th", "since")] : [])]));
  for (const c of circuits) {
    const cells = [el("td", c.provider), el("td", c.state.replace("_", "-"), `state state-${c.state}`)];
    if (since) cells.push(el("td", c.since ? new Date(c.since).toLocaleTimeString() : ""));
    table.appendChild(row(cells));
  }
  box.appendChild(table);
}

function renderFailures(failures) {
  const body = $("failures").tBodies[0];
  body.replaceChildren();
  if (!failures.length) { body.appendChild(row([el("td", "none", "na")])); return; }
  for (const f of failures) {
    const when = f.at ? new Date(f.at).toLocaleTimeString() : "";
    body.appendChild(row([
      el("td", String(f.log_id)), el("td", when), el("td", f.channel), el("td", f.status),
      el("td", fmt(f.attempts), "num"), el("td", f.provider || ""),
      el("td", [f.error_code, f.error].filter(Boolean).join(": "), "error"), el("td", f.recipient),
    ]));
  }
}

function renderErrors(errors) {
  const box = $("errors");
  const entries = Object.entries(errors || {});
  box.hidden = entries.length === 0;
  box.replaceChildren(...entries.map(([source, message]) => el("div", `${source} unavailable: ${message}`)));
}

function render(snap) {
  setText("vhost", snap.vhost);
  renderCounts(snap.counts);
  renderThroughput(snap.throughput, snap.latency, snap.retries);
  renderQueues(snap.queues, snap.queue_totals, snap.dlq_size);
  renderCircuits(snap.circuits);
  renderFailures(snap.recent_failures);
  renderErrors(snap.errors);
  const state = $("state");
  const degraded = Object.keys(snap.errors || {}).length > 0;
  state.textContent = degraded ? "degraded" : "live";
  state.className = `pill ${degraded ? "pill-down" : "pill-live"}`;
  setText("updated", new Date(snap.generated_at).toLocaleTimeString());
  document.body.dataset.generatedAt = snap.generated_at;
}

async function refresh() {
  try {
    const response = await fetch("/api/snapshot", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const snap = await response.json();
    refreshMs = Math.max(500, (snap.refresh_s || 2) * 1000);
    render(snap);
    lastOk = Date.now();
  } catch (err) {
    const state = $("state");
    state.textContent = lastOk ? `stale: ${err.message}` : `offline: ${err.message}`;
    state.className = "pill pill-down";
  } finally {
    setTimeout(refresh, refreshMs);
  }
}

refresh();
