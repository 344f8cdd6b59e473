// The console: plain DOM, no framework. Every string from the server is untrusted and is
// written with text nodes only; no HTML is ever parsed from data.
"use strict";

(() => {
  const API = "/console/api";
  const TOKEN_KEY = "console.token";
  const RUNS_PAGE = 50;
  const NOTIFICATION_POLL_MS = 4000;
  const LIVE_BACKOFF_MS = [1000, 2000, 5000, 10000, 30000];
  // A tool that changes tasks: the playground's task list is stale after one.
  const TASK_TOOLS = new Set([
    "add_task", "update_task", "complete_task", "delete_task",
    "restore_task", "reopen_task", "skip_occurrence", "snooze_reminder",
  ]);
  const STATUSES = ["succeeded", "failed", "running", "stopped"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const state = {
    token: null,
    me: null,
    filters: new URLSearchParams(),
    runRows: new Map(),
    newestRunId: 0,
    nextBefore: null,
    runsLoaded: false,
    runsGeneration: 0,
    transcriptTicket: 0,
    live: null,
    liveAttempt: 0,
    playground: { user: null, conversationId: null, turn: null, pollTimer: null },
  };

  // ---- DOM helpers -------------------------------------------------------------------

  function byId(id) {
    return document.getElementById(id);
  }

  function append(parent, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return parent;
  }

  function setAttributes(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "style") throw new Error("inline styles are not allowed (CSP)");
      if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    return node;
  }

  /** `el("td", {class: "num"}, "12", other)`: children are nodes or plain text. */
  function el(tag, attrs, ...children) {
    return append(setAttributes(document.createElement(tag), attrs), children);
  }

  function svg(tag, attrs, ...children) {
    return append(setAttributes(document.createElementNS(SVG_NS, tag), attrs), children);
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  // ---- formatting --------------------------------------------------------------------

  const dateTime = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
  const hourOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : dateTime.format(date);
  }

  function formatMs(ms) {
    if (ms === null || ms === undefined) return "";
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  }

  function formatNumber(value) {
    return value === null || value === undefined ? "–" : String(value);
  }

  function prettyJson(value) {
    if (typeof value === "string") {
      try {
        return JSON.stringify(JSON.parse(value), null, 2);
      } catch {
        return value;
      }
    }
    return JSON.stringify(value, null, 2);
  }

  // ---- errors ------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.detail) || `HTTP ${status}`);
      this.status = status;
      this.code = (body && body.code) || "";
      this.requestId = (body && body.request_id) || "";
    }
  }

  function describe(error) {
    if (error instanceof ApiError) {
      const code = error.code ? ` ${error.code}` : "";
      const request = error.requestId ? ` (request ${error.requestId})` : "";
      return `${error.status}${code}: ${error.message}${request}`;
    }
    return error && error.message ? error.message : String(error);
  }

  function isAbort(error) {
    return error && error.name === "AbortError";
  }

  function showError(message) {
    byId("error-text").textContent = message;
    show(byId("error"), true);
  }

  function clearError() {
    byId("error-text").textContent = "";
    show(byId("error"), false);
  }

  /** Shows an error; a rejected token ends the session. */
  function report(error) {
    if (isAbort(error)) return;
    if (error instanceof ApiError && error.status === 401) {
      signOut(describe(error));
      return;
    }
    showError(describe(error));
  }

  // ---- API ---------------------------------------------------------------------------

  async function request(path, { method = "GET", body, accept = "application/json", signal } = {}) {
    const headers = { Accept: accept, Authorization: `Bearer ${state.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) {
      let payload = null;
      try {
        payload = await response.json();
      } catch {
        payload = null;
      }
      throw new ApiError(response.status, payload);
    }
    return response;
  }

  async function getJson(path, options) {
    return (await request(path, options)).json();
  }

  function userPath(user, rest) {
    return `${API}/users/${encodeURIComponent(user)}/${rest}`;
  }

  /**
   * Reads a Server-Sent Events body, calling `onEvent({type, data})` per event; resolves
   * when the stream ends. Lines end in CRLF, LF or CR; a blank line ends an event.
   */
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let type = "";
    let data = [];

    const takeLine = (line) => {
      if (line === "") {
        if (data.length) onEvent({ type: type || "message", data: data.join("\n") });
        type = "";
        data = [];
        return;
      }
      if (line.startsWith(":")) return;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    };

    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let match;
      const lineEnd = /\r\n|\r|\n/g;
      let start = 0;
      while ((match = lineEnd.exec(buffer)) !== null) {
        // A lone CR at the end may be the first half of a CRLF: wait for the next chunk.
        if (match[0] === "\r" && match.index === buffer.length - 1 && !done) break;
        takeLine(buffer.slice(start, match.index));
        start = lineEnd.lastIndex;
      }
      buffer = buffer.slice(start);
      if (done) return;
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
  }

  // ---- session -----------------------------------------------------------------------

  async function signIn(token) {
    state.token = token;
    let me;
    try {
      me = await getJson(`${API}/me`);
    } catch (error) {
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showSignin();
      showError(isAbort(error) ? "Sign-in was interrupted" : describe(error));
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.me = me;
    clearError();
    showApp();
  }

  function signOut(message) {
    stopLive();
    stopPlayground();
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.me = null;
    state.runsLoaded = false;
    state.runsGeneration += 1;
    state.playground.user = null;
    state.playground.conversationId = null;
    state.filters = new URLSearchParams();
    resetRunsTable();
    byId("filters").reset();
    for (const id of ["chart-runs", "chart-latency", "chart-failures", "chart-range"]) byId(id).replaceChildren();
    state.transcriptTicket += 1;
    byId("whoami").textContent = "";
    byId("playground-user").value = "";
    byId("transcript").replaceChildren(el("p", { class: "empty" }, "Pick a run to read its conversation."));
    byId("playground-log").replaceChildren();
    byId("playground-tasks").replaceChildren();
    byId("playground-notifications").replaceChildren();
    byId("known-users").replaceChildren();
    showSignin();
    if (message) showError(message);
    else clearError();
  }

  function showSignin() {
    show(byId("app"), false);
    show(byId("session"), false);
    show(byId("signin"), true);
    byId("signin-token").value = "";
    byId("signin-token").focus();
  }

  function showApp() {
    const { me } = state;
    byId("whoami").textContent = me.operator ? `${me.user_id} · operator` : me.user_id;
    byId("whoami").dataset.operator = me.operator ? "true" : "false";
    // Anyone else reads only their own runs: the server scopes them, the field says so.
    byId("filter-user").readOnly = !me.operator;
    byId("filter-user").placeholder = me.operator ? "anyone" : me.user_id;
    show(byId("signin"), false);
    show(byId("session"), true);
    show(byId("app"), true);
    loadKnownUsers();
    route();
  }

  async function loadKnownUsers() {
    try {
      const users = await getJson(`${API}/users`);
      byId("known-users").replaceChildren(...users.items.map((user) => el("option", { value: user.user_id })));
    } catch (error) {
      report(error);
    }
  }

  // ---- routing -----------------------------------------------------------------------

  /** `#runs`, `#transcript/12` or `#playground`. */
  function route() {
    if (!state.me) return;
    const [view, argument] = location.hash.replace(/^#/, "").split("/");
    const name = ["runs", "transcript", "playground"].includes(view) ? view : "runs";
    for (const section of document.querySelectorAll(".view")) {
      show(section, section.dataset.view === name);
    }
    for (const tab of document.querySelectorAll(".tab")) {
      if (tab.dataset.view === name) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    if (name === "runs" && !state.runsLoaded) reloadRuns();
    if (name === "transcript" && argument) openTranscript(safeDecode(argument));
    if (name === "playground") enterPlayground();
    else leavePlayground();
  }

  // ---- runs --------------------------------------------------------------------------

  function readFilters() {
    const form = byId("filters");
    const params = new URLSearchParams();
    for (const name of ["status", "user", "model", "channel", "q"]) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    for (const name of ["since", "until"]) {
      const value = form.elements[name].value;
      if (!value) continue;
      const date = new Date(value); // a datetime-local value is the browser's local time
      if (Number.isNaN(date.getTime())) throw new Error(`${name} is not a valid date and time`);
      params.set(name, date.toISOString());
    }
    if (params.has("since") && params.has("until") && params.get("until") <= params.get("since")) {
      throw new Error("Until must be after since");
    }
    return params;
  }

  /** A hash part as typed: a malformed escape ("%") is kept as it is, not thrown. */
  function safeDecode(text) {
    try {
      return decodeURIComponent(text);
    } catch {
      return text;
    }
  }

  function withFilters(extra) {
    const params = new URLSearchParams(state.filters);
    for (const [name, value] of Object.entries(extra)) {
      if (value !== null && value !== undefined) params.set(name, String(value));
    }
    return params.toString();
  }

  function resetRunsTable() {
    byId("runs-body").replaceChildren();
    state.runRows.clear();
    state.newestRunId = 0;
    state.nextBefore = null;
    show(byId("runs-older"), false);
    show(byId("runs-empty"), false);
  }

  async function reloadRuns() {
    stopLive();
    resetRunsTable();
    state.runsLoaded = true;
    // A later reload (new filters, sign-out) makes this one's answer stale.
    const generation = ++state.runsGeneration;
    loadStats();
    let page;
    try {
      page = await getJson(`${API}/runs?${withFilters({ limit: RUNS_PAGE })}`);
    } catch (error) {
      if (generation === state.runsGeneration) report(error);
      return;
    }
    if (generation !== state.runsGeneration || !state.me) return;
    addOlderRuns(page);
    startLive();
  }

  async function loadOlderRuns() {
    const button = byId("runs-older");
    button.disabled = true;
    try {
      addOlderRuns(await getJson(
        `${API}/runs?${withFilters({ limit: RUNS_PAGE, before: state.nextBefore })}`,
      ));
    } catch (error) {
      report(error);
    } finally {
      button.disabled = false;
    }
  }

  function addOlderRuns(page) {
    const body = byId("runs-body");
    for (const run of page.items) {
      if (state.runRows.has(run.id)) continue;
      const row = runRow(run);
      state.runRows.set(run.id, row);
      body.append(row);
      state.newestRunId = Math.max(state.newestRunId, run.id);
    }
    state.nextBefore = page.next_before ?? null;
    show(byId("runs-older"), state.nextBefore !== null);
    show(byId("runs-empty"), state.runRows.size === 0);
  }

  /** The ids of the rows shown as running (newest 100): the stream sends their finish. */
  function shownRunning() {
    const ids = [...state.runRows]
      .filter(([, row]) => row.dataset.status === "running")
      .map(([id]) => id)
      .sort((a, b) => b - a)
      .slice(0, 100);
    return ids.length ? ids.join(",") : null;
  }

  /** A run from the live stream: a changed row is replaced in place, a new one goes on top. */
  function upsertRun(run) {
    const existing = state.runRows.get(run.id);
    const row = runRow(run);
    row.classList.add("fresh");
    if (existing) {
      existing.replaceWith(row);
    } else {
      // Rows are newest first: the new one goes before the newest older row.
      const older = [...state.runRows.keys()].filter((id) => id < run.id);
      if (older.length === 0 && state.nextBefore !== null) return; // on a page not loaded yet
      const next = older.length ? state.runRows.get(Math.max(...older)) : null;
      byId("runs-body").insertBefore(row, next);
    }
    state.runRows.set(run.id, row);
    state.newestRunId = Math.max(state.newestRunId, run.id);
    show(byId("runs-empty"), false);
  }

  function runRow(run) {
    const open = () => {
      location.hash = `#transcript/${run.conversation_id}`;
    };
    return el(
      "tr",
      {
        "data-testid": "run-row",
        "data-run-id": run.id,
        "data-status": run.status,
        class: `run status-${run.status}`,
        tabindex: 0,
        title: `Open conversation ${run.conversation_id}`,
        onclick: open,
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            open();
          }
        },
      },
      el("td", { class: "nowrap" }, el("time", { datetime: run.started_at }, formatTime(run.started_at))),
      el("td", { class: "user" }, run.user_id),
      el("td", null, run.channel),
      el("td", null, run.model || ""),
      el("td", null, statusBadge(run.status)),
      el("td", { class: "code" }, run.error_code || ""),
      el("td", { class: "num" }, formatMs(run.latency_ms)),
      el("td", { class: "num" }, formatNumber(run.tool_call_count)),
      el("td", { class: "num" }, `${formatNumber(run.input_tokens)} / ${formatNumber(run.output_tokens)}`),
      el("td", null, run.feedback || ""),
      el("td", { class: "preview", title: run.message || "" }, run.message || ""),
    );
  }

  function statusBadge(status) {
    return el("span", { class: `badge status-${status}` }, status);
  }

  // ---- live updates ------------------------------------------------------------------

  function setLive(stateName, text) {
    const indicator = byId("live-status");
    indicator.dataset.state = stateName;
    indicator.textContent = text;
  }

  function startLive() {
    stopLive();
    const controller = new AbortController();
    state.live = controller;
    state.liveAttempt = 0;
    followRuns(controller.signal);
  }

  function stopLive() {
    if (state.live) state.live.abort();
    state.live = null;
    setLive("off", "Not live");
  }

  async function followRuns(signal) {
    while (!signal.aborted) {
      try {
        const response = await request(
          `${API}/runs/stream?${withFilters({ after: state.newestRunId, running: shownRunning() })}`,
          { accept: "text/event-stream", signal },
        );
        setLive("on", "Live");
        await readEvents(response, (event) => {
          if (event.type !== "run") return;
          state.liveAttempt = 0;
          upsertRun(JSON.parse(event.data));
        });
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && error.status < 500) {
          report(error);
          setLive("off", "Not live");
          return;
        }
      }
      if (signal.aborted) return;
      const delay = LIVE_BACKOFF_MS[Math.min(state.liveAttempt, LIVE_BACKOFF_MS.length - 1)];
      state.liveAttempt += 1;
      setLive("waiting", `Reconnecting in ${Math.round(delay / 1000)} s`);
      await sleep(delay, signal);
    }
  }

  // ---- charts ------------------------------------------------------------------------

  async function loadStats() {
    const params = new URLSearchParams(state.filters);
    for (const name of ["limit", "before", "after"]) params.delete(name);
    try {
      drawCharts(await getJson(`${API}/stats?${params}`));
    } catch (error) {
      report(error);
    }
  }

  function drawCharts(stats) {
    const more = stats.truncated ? " (charts read the newest of them)" : "";
    byId("chart-range").textContent =
      `${stats.total} runs from ${formatTime(stats.since)} to ${formatTime(stats.until)}${more}`;
    byId("chart-runs").replaceChildren(runsChart(stats.buckets));
    byId("chart-latency").replaceChildren(latencyChart(stats.buckets));
    byId("chart-failures").replaceChildren(failuresChart(stats.failures));
  }

  const CHART = { width: 420, height: 210, left: 44, right: 10, top: 26, bottom: 30 };

  function chartFrame(label) {
    return svg("svg", {
      viewBox: `0 0 ${CHART.width} ${CHART.height}`,
      class: "chart-svg",
      role: "img",
      "aria-label": label,
    });
  }

  /** A round, even upper bound for an axis, so its half-way tick is a round number too. */
  function niceMax(value) {
    if (value <= 2) return 2;
    const power = 10 ** Math.floor(Math.log10(value));
    const step = [1, 2, 4, 6, 8, 10].find((s) => s * power >= value);
    return step * power;
  }

  function yAxis(root, max, format) {
    const plotBottom = CHART.height - CHART.bottom;
    const plotHeight = plotBottom - CHART.top;
    for (const fraction of [0, 0.5, 1]) {
      const y = plotBottom - fraction * plotHeight;
      root.append(
        svg("line", { x1: CHART.left, x2: CHART.width - CHART.right, y1: y, y2: y, class: "grid" }),
        svg("text", { x: CHART.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, format(max * fraction)),
      );
    }
  }

  function xAxis(root, buckets, slot) {
    const every = Math.max(1, Math.ceil(buckets.length / 6));
    buckets.forEach((bucket, index) => {
      if (index % every !== 0) return;
      root.append(svg("text", {
        x: CHART.left + slot * (index + 0.5),
        y: CHART.height - CHART.bottom + 16,
        class: "tick",
        "text-anchor": "middle",
      }, hourOnly.format(new Date(bucket.start))));
    });
  }

  function legend(root, entries) {
    let x = CHART.left;
    for (const [name, cssClass] of entries) {
      root.append(
        svg("rect", { x, y: 6, width: 10, height: 10, class: cssClass }),
        svg("text", { x: x + 14, y: 15, class: "legend" }, name),
      );
      x += 24 + name.length * 6.5;
    }
  }

  function emptyNote(root, text) {
    root.append(svg("text", {
      x: CHART.width / 2, y: CHART.height / 2, class: "empty-note", "text-anchor": "middle",
    }, text));
  }

  function runsChart(buckets) {
    const root = chartFrame("Runs per hour by status");
    const totals = buckets.map((b) => STATUSES.reduce((sum, s) => sum + (b.counts[s] || 0), 0));
    const max = niceMax(Math.max(0, ...totals));
    const plotBottom = CHART.height - CHART.bottom;
    const plotHeight = plotBottom - CHART.top;
    const slot = (CHART.width - CHART.left - CHART.right) / Math.max(1, buckets.length);
    yAxis(root, max, (v) => String(Math.round(v)));
    xAxis(root, buckets, slot);
    legend(root, STATUSES.map((s) => [s, `bar status-${s}`]));
    buckets.forEach((bucket, index) => {
      let top = plotBottom;
      for (const status of STATUSES) {
        const count = bucket.counts[status] || 0;
        if (!count) continue;
        const height = (count / max) * plotHeight;
        top -= height;
        root.append(svg("rect", {
          x: CHART.left + slot * index + slot * 0.15,
          y: top,
          width: slot * 0.7,
          height,
          class: `bar status-${status}`,
          "data-testid": "chart-bar",
        }, svg("title", null, `${hourOnly.format(new Date(bucket.start))}: ${count} ${status}`)));
      }
    });
    if (!totals.some(Boolean)) emptyNote(root, "No runs in this range");
    return root;
  }

  function latencyChart(buckets) {
    const root = chartFrame("Latency per hour, p50 and p95");
    const values = buckets.flatMap((b) => [b.p50_ms, b.p95_ms]).filter((v) => v !== null && v !== undefined);
    const max = niceMax(Math.max(0, ...values));
    const plotBottom = CHART.height - CHART.bottom;
    const plotHeight = plotBottom - CHART.top;
    const slot = (CHART.width - CHART.left - CHART.right) / Math.max(1, buckets.length);
    yAxis(root, max, (v) => formatMs(v).replace(" ", ""));
    xAxis(root, buckets, slot);
    legend(root, [["p50", "swatch p50"], ["p95", "swatch p95"]]);
    for (const [key, cssClass] of [["p50_ms", "p50"], ["p95_ms", "p95"]]) {
      // A gap (an hour without finished runs) breaks the line rather than dropping to zero.
      let points = [];
      const flush = () => {
        if (points.length > 1) root.append(svg("polyline", { points: points.join(" "), class: `line ${cssClass}` }));
        points = [];
      };
      buckets.forEach((bucket, index) => {
        const value = bucket[key];
        if (value === null || value === undefined) {
          flush();
          return;
        }
        const x = CHART.left + slot * (index + 0.5);
        const y = plotBottom - (value / max) * plotHeight;
        points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
        // p50 is drawn larger and first, so an hour where p95 equals it still shows both.
        root.append(svg("circle", { cx: x, cy: y, r: key === "p50_ms" ? 4 : 2.5, class: `dot ${cssClass}` },
          svg("title", null, `${hourOnly.format(new Date(bucket.start))} ${cssClass}: ${formatMs(value)}`)));
      });
      flush();
    }
    if (!values.length) emptyNote(root, "No finished runs in this range");
    return root;
  }

  function failuresChart(failures) {
    const root = chartFrame("Failures by error code");
    const rows = failures.slice(0, 6);
    const max = Math.max(1, ...rows.map((f) => f.count));
    const labelWidth = 130;
    const barLeft = CHART.left + labelWidth - 34;
    const barSpace = CHART.width - CHART.right - barLeft - 30;
    const rowHeight = Math.min(26, (CHART.height - CHART.top - 10) / Math.max(1, rows.length));
    rows.forEach((failure, index) => {
      const y = CHART.top + index * rowHeight;
      const width = Math.max(2, (failure.count / max) * barSpace);
      root.append(
        svg("text", { x: barLeft - 6, y: y + rowHeight * 0.6, class: "tick", "text-anchor": "end" }, failure.code),
        svg("rect", {
          x: barLeft, y: y + 3, width, height: rowHeight - 6, class: "bar status-failed", "data-testid": "chart-bar",
        }, svg("title", null, `${failure.code}: ${failure.count}`)),
        svg("text", { x: barLeft + width + 4, y: y + rowHeight * 0.6, class: "tick" }, String(failure.count)),
      );
    });
    root.append(svg("text", { x: barLeft, y: 15, class: "legend" }, "failed runs per error code"));
    if (!rows.length) emptyNote(root, "No failures in this range");
    return root;
  }

  // ---- transcript --------------------------------------------------------------------

  async function openTranscript(id) {
    const container = byId("transcript");
    const ticket = ++state.transcriptTicket; // a later opening wins over this one
    byId("conversation-id").value = id;
    container.replaceChildren(el("p", { class: "empty" }, `Loading conversation ${id}…`));
    let data;
    try {
      data = await getJson(`${API}/conversations/${encodeURIComponent(id)}`);
      if (ticket !== state.transcriptTicket) return;
    } catch (error) {
      if (ticket !== state.transcriptTicket) return;
      container.replaceChildren(el("p", { class: "inline-error", "data-testid": "transcript-error" },
        `Could not open conversation ${id}: ${describe(error)}`));
      report(error);
      return;
    }
    container.replaceChildren(
      transcriptHeader(data.conversation),
      el("h3", null, "Messages"),
      el("ol", { class: "messages" }, data.messages.map(messageItem)),
      el("h3", null, "Runs"),
      transcriptRuns(data.runs),
    );
  }

  function transcriptHeader(conversation) {
    const fact = (name, value) => [el("dt", null, name), el("dd", null, value)];
    return el("div", { class: "transcript-header", "data-testid": "transcript-header" },
      el("h2", { "data-testid": "transcript-title" }, conversation.title || "(untitled)"),
      el("dl", { class: "facts" },
        fact("Conversation", `#${conversation.id}`),
        fact("User", conversation.user_id),
        fact("Created", formatTime(conversation.created_at)),
        fact("Last activity", formatTime(conversation.updated_at)),
        conversation.deleted_at ? fact("Deleted", formatTime(conversation.deleted_at)) : null),
      el("div", { class: "export" },
        el("button", { type: "button", class: "secondary", "data-testid": "export-md",
          onclick: () => exportConversation(conversation.id, "md") }, "Export Markdown"),
        el("button", { type: "button", class: "secondary", "data-testid": "export-jsonl",
          onclick: () => exportConversation(conversation.id, "jsonl") }, "Export JSONL")));
  }

  function messageItem(message) {
    const replaced = Boolean(message.deleted_at);
    return el("li", {
      class: `message role-${message.role}${replaced ? " replaced" : ""}`,
      "data-testid": "message",
      "data-role": message.role,
    },
    el("div", { class: "message-meta" },
      el("span", { class: "role" }, message.role),
      el("time", { datetime: message.created_at }, formatTime(message.created_at)),
      message.run_id ? el("span", { class: "muted" }, `run ${message.run_id}`) : null,
      replaced
        ? el("span", { class: "badge replaced-badge", title: `Replaced at ${formatTime(message.deleted_at)}` },
          "replaced")
        : null),
    el("div", { class: "content" }, message.content || ""),
    (message.tool_calls || []).map(toolCallItem));
  }

  function toolCallItem(call) {
    return el("div", { class: `tool-call${call.is_error ? " is-error" : ""}`, "data-testid": "tool-call" },
      el("div", { class: "tool-call-head" },
        el("span", { class: "tool-name", "data-testid": "tool-name" }, call.name),
        call.is_error ? el("span", { class: "badge status-failed" }, "error") : null,
        call.duration_ms === null || call.duration_ms === undefined
          ? null
          : el("span", { class: "muted", "data-testid": "tool-duration" }, `${call.duration_ms} ms`)),
      el("div", { class: "tool-io" },
        el("div", null, el("div", { class: "io-label" }, "Arguments"),
          el("pre", { "data-testid": "tool-arguments" }, prettyJson(call.arguments))),
        el("div", null, el("div", { class: "io-label" }, "Result"),
          el("pre", { "data-testid": "tool-result" }, prettyJson(call.result)))));
  }

  function transcriptRuns(runs) {
    if (!runs.length) return el("p", { class: "empty" }, "No runs recorded.");
    const header = ["Run", "Started", "Status", "Model", "Latency", "Error", "Tokens in / out", "Feedback"];
    return el("div", { class: "table-wrap" }, el("table", { class: "runs", "data-testid": "transcript-runs" },
      el("thead", null, el("tr", null, header.map((name) => el("th", { scope: "col" }, name)))),
      el("tbody", null, runs.map((run) => el("tr", { "data-run-id": run.id },
        el("td", null, `#${run.id}`),
        el("td", { class: "nowrap" }, formatTime(run.started_at)),
        el("td", null, statusBadge(run.status)),
        el("td", null, run.model || ""),
        el("td", { class: "num" }, formatMs(run.latency_ms)),
        el("td", null, run.error_code ? el("span", { class: "code" }, run.error_code) : null,
          run.error_message ? el("div", { class: "error-message" }, run.error_message) : null),
        el("td", { class: "num" }, `${formatNumber(run.input_tokens)} / ${formatNumber(run.output_tokens)}`),
        el("td", null, run.feedback || ""))))));
  }

  async function exportConversation(id, format) {
    try {
      const response = await request(
        `${API}/conversations/${encodeURIComponent(id)}/export?format=${format}`,
        { accept: "*/*" },
      );
      const url = URL.createObjectURL(await response.blob());
      const link = el("a", { href: url, download: `conversation-${id}.${format}`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (error) {
      report(error);
    }
  }

  // ---- playground --------------------------------------------------------------------

  function enterPlayground() {
    const input = byId("playground-user");
    input.readOnly = !state.me.operator;
    if (!state.me.operator) input.value = state.me.user_id;
    else if (!input.value.trim()) input.value = state.playground.user || state.me.user_id;
    if (!choosePlaygroundUser(input.value.trim())) refreshTasks();
    pollNotifications();
  }

  function leavePlayground() {
    if (state.playground.pollTimer) clearTimeout(state.playground.pollTimer);
    state.playground.pollTimer = null;
  }

  function stopPlayground() {
    leavePlayground();
    if (state.playground.turn) state.playground.turn.abort();
    state.playground.turn = null;
  }

  /** Switches the playground to another user; false when there is nothing to switch. */
  function choosePlaygroundUser(user) {
    if (!user || user === state.playground.user) return false;
    state.playground.user = user;
    newConversation();
    byId("playground-tasks").replaceChildren();
    byId("playground-notifications").replaceChildren();
    refreshTasks();
    refreshNotifications();
    return true;
  }

  function newConversation() {
    // A turn still streaming goes on on the server; this page stops following it.
    if (state.playground.turn) state.playground.turn.abort();
    state.playground.turn = null;
    byId("playground-send").disabled = false;
    state.playground.conversationId = null;
    byId("playground-log").replaceChildren();
    byId("playground-conversation").textContent = "New conversation";
  }

  function setConversation(id) {
    state.playground.conversationId = id;
    byId("playground-conversation").textContent = `Conversation #${id}`;
  }

  async function refreshTasks() {
    const user = state.playground.user;
    if (!user) return;
    try {
      const page = await getJson(`${userPath(user, "tasks")}?limit=100`);
      if (user === state.playground.user) byId("playground-tasks").replaceChildren(...taskItems(page.items));
    } catch (error) {
      report(error);
    }
  }

  function taskItems(tasks) {
    if (!tasks.length) return [el("li", { class: "empty" }, "No tasks.")];
    return tasks.map((task) => el("li", {
      class: `task${task.completed ? " done" : ""}`,
      "data-testid": "playground-task",
      "data-task-id": task.id,
    },
    el("span", { class: "task-title" }, task.title),
    el("span", { class: "task-meta" },
      task.completed ? "done" : null,
      task.priority ? el("span", { class: `priority priority-${task.priority}` }, task.priority) : null,
      task.due_at ? `due ${formatTime(task.due_at)}` : null,
      (task.tags || []).map((tag) => el("span", { class: "tag" }, tag)))));
  }

  async function refreshNotifications() {
    const user = state.playground.user;
    if (!user) return;
    try {
      const page = await getJson(`${userPath(user, "notifications")}?limit=20`);
      if (user !== state.playground.user) return;
      byId("playground-notifications").replaceChildren(...notificationItems(page.items));
    } catch (error) {
      report(error);
    }
  }

  function notificationItems(notes) {
    if (!notes.length) return [el("li", { class: "empty" }, "No notifications.")];
    return notes.map((note) => el("li", {
      class: `notification${note.read ? "" : " unread"}`,
      "data-testid": "playground-notification",
    },
    el("span", { class: "task-title" }, note.title),
    el("span", { class: "task-meta" },
      `fired ${formatTime(note.fired_at)}`,
      note.late ? " · late" : null,
      note.read ? null : " · unread")));
  }

  function pollNotifications() {
    leavePlayground();
    state.playground.pollTimer = setTimeout(async () => {
      if (!state.me || byId("view-playground").hidden) return;
      await refreshNotifications();
      if (state.me && !byId("view-playground").hidden) pollNotifications();
    }, NOTIFICATION_POLL_MS);
  }

  /** The elements of one exchange in the chat log, updated as the turn's events arrive. */
  function turnView(message) {
    const reply = el("div", { class: "reply streaming", "data-testid": "playground-reply" });
    const tools = el("div", { class: "live-tools" });
    const calls = new Map();
    byId("playground-log").append(
      el("li", { class: "bubble user" },
        el("div", { class: "role" }, state.playground.user),
        el("div", { class: "content" }, message)),
      el("li", { class: "bubble assistant" }, el("div", { class: "role" }, "assistant"), tools, reply),
    );
    const callItem = (data) => {
      let item = calls.get(data.call_id);
      if (!item) {
        item = el("div", {
          class: "tool-call", "data-testid": "playground-tool-call", "data-call-id": data.call_id,
        });
        calls.set(data.call_id, item);
        tools.append(item);
      }
      return item;
    };
    return {
      delta(text) {
        reply.append(text);
      },
      started(data) {
        callItem(data).replaceChildren(
          el("div", { class: "tool-call-head" },
            el("span", { class: "tool-name" }, data.name),
            el("span", { class: "badge status-running", "data-testid": "tool-state" }, "running")),
          el("pre", null, prettyJson(data.arguments)));
      },
      finished(data) {
        const item = callItem(data);
        item.classList.toggle("is-error", Boolean(data.is_error));
        item.replaceChildren(
          el("div", { class: "tool-call-head" },
            el("span", { class: "tool-name" }, data.name),
            el("span", { class: `badge status-${data.is_error ? "failed" : "succeeded"}`, "data-testid": "tool-state" },
              data.is_error ? "error" : "done")),
          el("pre", null, prettyJson(data.arguments)),
          el("details", { class: "tool-result" },
            el("summary", null, data.is_error ? "Error" : "Result"),
            el("pre", null, prettyJson(data.result))));
      },
      done(response) {
        reply.replaceChildren(response.response);
        reply.classList.remove("streaming");
      },
      fail(text) {
        reply.classList.remove("streaming");
        reply.append(el("div", { class: "inline-error" }, text));
      },
    };
  }

  async function sendChat(message) {
    const { playground } = state;
    const user = playground.user;
    const view = turnView(message);
    const controller = new AbortController();
    playground.turn = controller;
    byId("playground-send").disabled = true;
    const body = { message };
    if (playground.conversationId !== null) body.conversation_id = playground.conversationId;
    try {
      const response = await request(userPath(user, "chat"), {
        method: "POST", body, accept: "text/event-stream", signal: controller.signal,
      });
      await readEvents(response, (event) => onChatEvent(view, user, event));
    } catch (error) {
      if (!isAbort(error)) {
        view.fail(describe(error));
        report(error);
      }
    } finally {
      if (playground.turn === controller) {
        playground.turn = null;
        byId("playground-send").disabled = false;
      }
    }
  }

  function onChatEvent(view, user, event) {
    const data = JSON.parse(event.data);
    if (user !== state.playground.user) return;
    switch (event.type) {
      case "conversation":
        setConversation(data.conversation_id);
        break;
      case "delta":
        view.delta(data.text);
        break;
      case "tool_call_started":
        view.started(data);
        break;
      case "tool_call_finished":
        view.finished(data);
        if (TASK_TOOLS.has(data.name)) refreshTasks();
        break;
      case "done":
        setConversation(data.conversation_id);
        view.done(data);
        refreshTasks();
        break;
      case "error":
        view.fail(`${data.code || "error"}: ${data.detail || "the turn failed"}` +
          (data.request_id ? ` (request ${data.request_id})` : ""));
        break;
      default:
        break;
    }
  }

  // ---- wiring ------------------------------------------------------------------------

  function onSubmit(id, handler) {
    byId(id).addEventListener("submit", (event) => {
      event.preventDefault();
      handler(event);
    });
  }

  function wire() {
    onSubmit("signin-form", () => {
      const token = byId("signin-token").value.trim();
      if (!token) {
        showError("Paste a token to sign in");
        return;
      }
      clearError();
      signIn(token);
    });
    byId("signout").addEventListener("click", () => signOut());
    byId("error-dismiss").addEventListener("click", clearError);
    onSubmit("filters", () => {
      try {
        state.filters = readFilters();
      } catch (error) {
        showError(describe(error));
        return;
      }
      clearError();
      reloadRuns();
    });
    byId("filter-reset").addEventListener("click", () => {
      byId("filters").reset();
      state.filters = new URLSearchParams();
      reloadRuns();
    });
    byId("runs-older").addEventListener("click", loadOlderRuns);
    onSubmit("open-conversation", () => {
      const id = byId("conversation-id").value.trim();
      if (/^[0-9]+$/.test(id)) location.hash = `#transcript/${id}`;
    });
    byId("playground-user").addEventListener("change", (event) => {
      if (state.me && state.me.operator) choosePlaygroundUser(event.target.value.trim());
    });
    byId("playground-new").addEventListener("click", newConversation);
    byId("playground-tasks-refresh").addEventListener("click", refreshTasks);
    onSubmit("playground-form", () => {
      const input = byId("playground-input");
      const message = input.value.trim();
      if (state.me.operator) choosePlaygroundUser(byId("playground-user").value.trim());
      if (!message || state.playground.turn || !state.playground.user) return;
      input.value = "";
      sendChat(message);
    });
    byId("playground-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        byId("playground-form").requestSubmit();
      }
    });
    window.addEventListener("hashchange", route);
  }

  function start() {
    wire();
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token);
    else showSignin();
  }

  start();
})();
