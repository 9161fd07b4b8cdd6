// The operator page: polls /api/snapshot and renders it. Data goes in through textContent only.
"use strict";

const STATUSES = ["PENDING", "PROCESSING", "SENT", "DELIVERED", "FAILED", "BOUNCED", "IN_DOUBT", "CANCELLED"];
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
  setText("receipts-overdue", fmt(retries && retries.receipts_overdue));
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

function percent(value) { return value === null || value === undefined ? "n/a" : `${(value * 100).toFixed(1)} %`; }
function ms(value) { return value === null || value === undefined ? "n/a" : `${number.format(Math.round(value))} ms`; }
function duration(s) {
  if (s === null || s === undefined) return "n/a";
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function empty(body, text, span) {
  const cell = el("td", text, "na"); cell.colSpan = span; body.replaceChildren(row([cell]));
}

function renderProviders(providers) {
  const body = $("providers").tBodies[0];
  if (!providers) { empty(body, "n/a: database unavailable", 7); return; }
  if (!providers.length) { empty(body, "no provider called in the last 5 minutes", 7); return; }
  body.replaceChildren(...providers.map((p) => {
    const tr = row([
      el("td", p.provider), el("td", p.state.replace("_", "-"), `state state-${p.state}`),
      el("td", fmt(p.calls), "num"), el("td", fmt(p.errors), "num"),
      el("td", percent(p.error_rate), p.error_rate > 0.2 ? "num bad" : "num"),
      el("td", ms(p.latency_p50_ms), "num"), el("td", ms(p.latency_p95_ms), "num"),
    ]);
    tr.dataset.provider = p.provider;
    return tr;
  }));
}

function renderLanes(lanes) {
  const body = $("lanes").tBodies[0];
  if (!lanes) { empty(body, "n/a: broker unavailable", 6); return; }
  if (!lanes.length) { empty(body, "no shard queues in this vhost", 6); return; }
  body.replaceChildren(...lanes.map((l) => {
    const tr = row([
      el("td", l.lane), el("td", fmt(l.shards), "num"), el("td", fmt(l.ready), "num"),
      el("td", fmt(l.unacked), "num"), el("td", fmt(l.consumers), "num"),
      el("td", l.unconsumed.length ? l.unconsumed.join(", ") : "none", l.unconsumed.length ? "bad" : "ok"),
    ]);
    tr.dataset.lane = l.lane;
    return tr;
  }));
}

function renderProcesses(processes) {
  const body = $("processes").tBodies[0];
  if (!processes) { empty(body, "n/a: broker and database unavailable", 6); return; }
  if (!processes.length) { empty(body, "no process connected", 6); return; }
  body.replaceChildren(...processes.map((p) => {
    const since = p.connected_at || p.database_since;
    const tr = row([el("td", p.process), el("td", p.host), el("td", p.pid === null ? "" : String(p.pid), "num"),
                    el("td", p.broker_connections ? fmt(p.channels) : "–", "num"),
                    el("td", p.database_connections ? fmt(p.database_connections) : "–", "num"),
                    el("td", since ? new Date(since).toLocaleTimeString() : "")]);
    tr.dataset.process = p.process;
    return tr;
  }));
}

function renderCampaigns(campaigns) {
  const body = $("campaigns").tBodies[0];
  if (!campaigns) { empty(body, "n/a: database unavailable", 9); return; }
  if (!campaigns.length) { empty(body, "no campaign running or finished in the last hour", 9); return; }
  body.replaceChildren(...campaigns.map((c) => {
    const bar = el("div", null, "bar"); bar.style.width = `${(c.progress || 0) * 100}%`;
    const track = el("div", null, "track"); track.appendChild(bar);
    const cell = el("td"); cell.appendChild(track); cell.appendChild(el("small", percent(c.progress)));
    const eta = c.eta_s === 0 ? "done" : c.eta_s === null ? "n/a (nothing finished in the last minute)" : duration(c.eta_s);
    const tr = row([el("td", String(c.id), "num"), el("td", c.name), el("td", c.tenant), el("td", c.status), cell,
                    el("td", `${fmt(c.done)} / ${fmt(c.total)}`, "num"), el("td", fmt(c.failed), "num"),
                    el("td", `${c.rate_per_s} /s`, "num"), el("td", eta)]);
    tr.dataset.campaign = String(c.id);
    return tr;
  }));
}

function renderDeadLetters(dlq) {
  const body = $("dead-letters").tBodies[0];
  const note = $("dead-letters-note");
  if (!dlq || dlq.error) {
    note.textContent = "what the DLQ holds now";
    empty(body, `n/a: ${dlq ? dlq.error : "no answer"}`, 6);
    return;
  }
  note.textContent = dlq.truncated
    ? `what the DLQ holds now: the first ${fmt(dlq.scanned)} of ${fmt(dlq.depth)} messages (truncated)`
    : `what the DLQ holds now: all ${fmt(dlq.scanned)} messages`;
  if (dlq.other_readers) note.textContent += `; ${dlq.other_readers} other reader(s) hide some`;
  const reasons = dlq.reasons;
  if (!reasons.length) { empty(body, "the DLQ is empty", 6); return; }
  body.replaceChildren(...reasons.map((r) => {
    const code = el("code", r.command);
    const copy = el("button", "copy", "copy");
    copy.type = "button";
    copy.addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(r.command));
    const cell = el("td", null, "command"); cell.appendChild(code); cell.appendChild(copy);
    const tr = row([el("td", r.reason), el("td", r.error_code || ""), el("td", r.status),
                    el("td", fmt(r.count), "num"), el("td", when(r.latest)), cell]);
    tr.dataset.reason = r.reason;
    return tr;
  }));
}

function renderSearch(answer) {
  const box = $("search-results");
  box.hidden = false;
  const close = el("button", "close", "close");
  close.type = "button";
  close.addEventListener("click", () => { box.hidden = true; });
  const title = el("h2", `Search "${answer.query}": ${answer.results.length} message(s)`);
  title.appendChild(close);
  const parts = [title];
  if (answer.error) parts.push(el("p", answer.error, "bad"));
  if (!answer.error && !answer.results.length) parts.push(el("p", "no message with this id or recipient", "na"));
  for (const log of answer.results) {
    const head = el("h3", `log ${log.log_id} · ${log.channel} · ${log.status} · attempt ${log.attempts} of ${log.max_attempts}`);
    const meta = el("p", `tenant ${log.tenant}${log.campaign_id ? ` · campaign ${log.campaign_id}` : ""} · recipient hash ${log.recipient}${log.last_error ? ` · last error: ${log.last_error}` : ""}`, "meta");
    const list = el("ol", null, "timeline");
    for (const e of log.events) {
      const item = el("li");
      item.appendChild(el("time", when(e.at)));
      item.appendChild(el("b", e.event));
      if (e.detail) item.appendChild(el("span", e.detail));
      list.appendChild(item);
    }
    const section = el("div", null, "result");
    section.dataset.logId = String(log.log_id);
    section.append(head, meta, list);
    parts.push(section);
  }
  box.replaceChildren(...parts);
}

async function search(event) {
  event.preventDefault();
  const q = $("search-q").value.trim();
  if (!q) return;
  try {
    const response = await fetch(`/api/search?q=${encodeURIComponent(q)}`, { cache: "no-store" });
    const answer = await response.json();
    renderSearch(response.ok ? answer : { query: q, results: [], error: answer.error || `HTTP ${response.status}` });
  } catch (err) {
    renderSearch({ query: q, results: [], error: err.message });
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
  renderProviders(snap.providers);
  renderLanes(snap.lanes);
  renderProcesses(snap.processes);
  renderCampaigns(snap.campaigns);
  renderDeadLetters(snap.dead_letters);
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

$("search").addEventListener("submit", search);
refresh();
