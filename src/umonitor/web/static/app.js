// The dashboard: three views chosen by the URL fragment (docs/web.md "Pages").
//
//   #/                 the fleet, live from /api/fleet/events
//   #/tail?...         the live tail, from /api/tail (an EventSource per filter)
//   #/instance/NAME    records, rate chart, crash reports, console and actions
//
// Everything a guest sent (messages, fields, names, crash reports) is untrusted: it
// only ever reaches the page as textContent or as an attribute value, never as markup.
"use strict";

(function () {
  const SEVERITIES = window.umonChart.SEVERITIES;
  const ORIGINS = ["app", "console", "syslog"];
  const TAIL_ROWS = 2000; // rows kept in the live tail; older ones are removed
  const TAIL_LAST = 200; // records asked for when a tail starts
  const PAGE = 200; // records per page on an instance's page

  const $ = (id) => document.getElementById(id);

  // -- building the page ---------------------------------------------------------

  // el("td", {class: "num", data: {col: "x"}, title: "..."}, "text", node, ...)
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "data") {
        for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
      } else if (key === "text") node.textContent = String(value);
      else if (key === "hidden") node.hidden = Boolean(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    node.replaceChildren();
  }

  function instanceHref(name) {
    return "#/instance/" + encodeURIComponent(name);
  }

  function fieldPairs(fields) {
    if (Array.isArray(fields)) return fields.filter((f) => Array.isArray(f) && f.length === 2);
    if (fields && typeof fields === "object") return Object.entries(fields);
    return [];
  }

  function timeText(record) {
    if (typeof record.time === "string") return record.time;
    if (typeof record.time_ns === "number") return new Date(record.time_ns / 1e6).toISOString();
    return "";
  }

  function clockTime(record) {
    const t = timeText(record);
    return t.length >= 23 ? t.slice(11, 23) : t;
  }

  function fullTime(text) {
    return typeof text === "string" ? text.replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1") : "";
  }

  function duration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function bytes(n) {
    if (typeof n !== "number") return "–";
    if (n < 1024 * 1024) return `${Math.round(n / 1024)} KiB`;
    return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  }

  function number(n) {
    return typeof n === "number" ? String(n) : "–";
  }

  function lastExitText(last) {
    if (!last) return "";
    if (typeof last === "string") return last;
    const outcome = last.outcome || "";
    return last.reason ? `${outcome}: ${last.reason}` : outcome;
  }

  // The message cell: the message, then its fields, muted.
  function messageCell(record) {
    const cell = el(
      "td",
      { class: "msg" },
      el("span", { class: "message" }, record.message === undefined ? "" : record.message),
    );
    const pairs = fieldPairs(record.fields);
    if (pairs.length) {
      cell.append(" ", el("span", { class: "fields" }, pairs.map(([k, v]) => `${k}=${v}`).join(" ")));
    }
    return cell;
  }

  function whereText(record) {
    let where = record.file ? `${record.file}:${record.line || 0}` : "";
    if (record.function) where += where ? ` ${record.function}` : record.function;
    return where;
  }

  function severityOptions(select, allLabel) {
    clear(select);
    for (const sev of SEVERITIES) {
      select.append(el("option", { value: sev }, sev === "debug" ? allLabel : sev));
    }
    select.value = "debug";
  }

  // -- talking to the server -----------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // A request that fails before any answer (the server restarting, the browser
  // dropping connections when the host's addresses change) is tried again a few
  // times when repeating it is harmless: reads, and setting a level.
  async function api(path, options, repeatable) {
    const reads = repeatable || !options || !options.method || options.method === "GET";
    let response;
    for (let attempt = 0; ; attempt++) {
      try {
        response = await fetch(path, { credentials: "same-origin", ...options });
        break;
      } catch (exc) {
        if (!reads || attempt >= 3) {
          throw new ApiError("the dashboard's server cannot be reached", 0);
        }
        await sleep(250 * (attempt + 1));
      }
    }
    let body = null;
    try {
      body = await response.json();
    } catch (exc) {
      body = null;
    }
    if (!response.ok) {
      const sentence =
        body && typeof body.error === "string" ? body.error : `HTTP status ${response.status}`;
      if (response.status === 401) needToken();
      throw new ApiError(sentence, response.status);
    }
    return body;
  }

  function post(path, payload, repeatable) {
    const options = {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Umonitor": "1" },
      body: JSON.stringify(payload || {}),
    };
    return api(path, options, repeatable);
  }

  function instanceApi(name, rest) {
    return `/api/instances/${encodeURIComponent(name)}/${rest}`;
  }

  function showBanner(text) {
    const banner = $("banner");
    clear(banner);
    const close = el("button", { type: "button", id: "banner-close", class: "link" }, "dismiss");
    close.addEventListener("click", () => {
      banner.hidden = true;
    });
    banner.append(el("span", { id: "banner-text" }, text), " ", close);
    banner.hidden = false;
  }

  function needToken() {
    showBanner(
      "This dashboard needs its token: open /?token=TOKEN once in this browser " +
        "(a cookie then keeps it), or ask whoever runs umonitor web for it.",
    );
  }

  // -- fleet ---------------------------------------------------------------------

  const fleet = { data: null, source: null, retry: null };

  function setLive(state, text) {
    const live = $("live");
    live.dataset.state = state;
    live.textContent = text;
  }

  function startFleetStream() {
    if (fleet.source) fleet.source.close();
    const source = new EventSource("/api/fleet/events");
    fleet.source = source;
    setLive("connecting", "connecting");
    source.addEventListener("fleet", (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (exc) {
        return;
      }
      setLive("live", "live");
      onFleet(data);
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        setLive("down", "disconnected");
        // Learn why (a 401 says so in the banner), then try again.
        api("/api/fleet").then(onFleet, () => {});
        clearTimeout(fleet.retry);
        fleet.retry = setTimeout(startFleetStream, 5000);
      } else {
        setLive("connecting", "reconnecting");
      }
    });
  }

  function onFleet(data) {
    if (!data || !Array.isArray(data.instances)) return;
    fleet.data = data;
    renderFleet(data);
    renderTailInstances(data);
    renderInstanceSummary();
  }

  function instanceByName(name) {
    const data = fleet.data;
    return data ? data.instances.find((i) => i.name === name) : undefined;
  }

  const FLEET_COLUMNS = [
    "name",
    "state",
    "address",
    "uptime",
    "restarts",
    "last-exit",
    "level",
    "counts",
    "records",
    "rate",
    "dropped",
    "crashes",
  ];
  const NUMERIC = new Set(["uptime", "restarts", "records", "rate", "dropped", "crashes"]);

  function fleetRow(name) {
    const row = el("tr", { data: { instance: name } });
    for (const col of FLEET_COLUMNS) {
      const cell = el(col === "name" ? "th" : "td", {
        data: { col },
        class: NUMERIC.has(col) ? "num" : undefined,
        scope: col === "name" ? "row" : undefined,
      });
      if (col === "name") cell.append(el("a", { href: instanceHref(name) }, name));
      if (col === "counts") {
        for (const sev of SEVERITIES) {
          cell.append(el("span", { class: `count sev-${sev}`, data: { sev, count: 0 } }), " ");
        }
      }
      row.append(cell);
    }
    return row;
  }

  function setCell(row, col, text, title) {
    const cell = row.querySelector(`[data-col="${col}"]`);
    if (cell.textContent !== text) cell.textContent = text;
    if (title) cell.title = title;
    else cell.removeAttribute("title");
    return cell;
  }

  function renderFleet(data) {
    const when = typeof data.updated_ns === "number" ? new Date(data.updated_ns / 1e6) : new Date();
    $("fleet-updated").textContent =
      `Updated ${when.toISOString().slice(11, 19)} UTC · ` +
      (data.fleet ? "a fleet runs (umonitor up)" : "no fleet runs: guests that connect on their own") +
      (data.behind_bytes > 0 ? ` · the counts do not cover the last ${bytes(data.behind_bytes)} of log yet` : "");
    const body = $("fleet-rows");
    const rows = new Map();
    for (const row of body.querySelectorAll("tr[data-instance]")) rows.set(row.dataset.instance, row);
    const seen = new Set();
    for (const inst of data.instances) {
      const name = String(inst.name);
      seen.add(name);
      let row = rows.get(name);
      if (!row) {
        row = fleetRow(name);
        rows.set(name, row);
      }
      body.append(row); // keeps the server's order
      row.dataset.state = String(inst.state || "");
      row.dataset.connected = String(Boolean(inst.connected));
      const state = setCell(
        row,
        "state",
        String(inst.state || ""),
        (inst.connected ? "the guest is connected" : "the guest is not connected") +
          (inst.last_seen ? `; last record ${fullTime(inst.last_seen)} UTC` : ""),
      );
      state.className = `state state-${String(inst.state || "").replace(/[^a-z-]/g, "")}`;
      setCell(row, "address", inst.address ? String(inst.address) : "–");
      setCell(row, "uptime", duration(inst.uptime_s));
      setCell(row, "restarts", number(inst.restarts));
      const last = lastExitText(inst.last_exit);
      setCell(row, "last-exit", last || "–", last && inst.last_exit.time ? `${last} (${inst.last_exit.time})` : last);
      setCell(row, "level", inst.level ? String(inst.level) : "–");
      const counts = inst.counts || {};
      for (const span of row.querySelectorAll("[data-col=counts] [data-sev]")) {
        const n = Number(counts[span.dataset.sev]) || 0;
        span.dataset.count = String(n);
        span.textContent = `${span.dataset.sev} ${n}`;
        span.classList.toggle("zero", n === 0);
      }
      setCell(row, "records", number(inst.records));
      setCell(row, "rate", typeof inst.rate === "number" ? `${inst.rate.toFixed(1)}/s` : "–");
      setCell(row, "dropped", number(inst.dropped));
      setCell(row, "crashes", number(inst.crashes));
    }
    for (const [name, row] of rows) if (!seen.has(name)) row.remove();
    $("fleet-empty").hidden = data.instances.length > 0;
    renderCollector(data.collector);
    renderExporters(data.exporters);
  }

  function renderCollector(c) {
    const list = $("collector");
    clear(list);
    const fact = (label, value, key) =>
      list.append(el("dt", {}, label), el("dd", { data: { key } }, value));
    if (!c || c.running === false) {
      fact("State", "not running", "state");
      return;
    }
    fact("State", "running", "state");
    fact("PID", number(c.pid), "pid");
    fact("RSS", bytes(c.rss_bytes), "rss");
    fact("Connections", number(c.connections), "connections");
    fact("Listening", Array.isArray(c.listening) ? c.listening.join(", ") : "–", "listening");
    fact("Refused", number(c.refused), "refused");
    fact("Protocol errors", number(c.protocol_errors), "protocol-errors");
    const limits = c.limits && typeof c.limits === "object" ? Object.entries(c.limits) : [];
    fact("Limit hits", limits.length ? limits.map(([k, v]) => `${k} ${v}`).join(", ") : "none", "limits");
  }

  function renderExporters(exporters) {
    const body = $("exporter-rows");
    clear(body);
    const list = Array.isArray(exporters) ? exporters : [];
    for (const x of list) {
      body.append(
        el(
          "tr",
          { data: { exporter: x.name } },
          el("th", { scope: "row", title: x.target || undefined }, x.name),
          el("td", { data: { col: "state" }, title: x.error || undefined }, x.state || "–"),
          el("td", { class: "num" }, typeof x.backlog === "number" ? bytes(x.backlog) : "–"),
          el("td", { class: "num" }, number(x.sent)),
          el("td", { class: "num" }, number(x.dropped)),
          el("td", { class: "error" }, x.error || ""),
        ),
      );
    }
    $("exporters").hidden = list.length === 0;
    $("exporters-empty").hidden = list.length > 0;
  }

  // -- live tail -----------------------------------------------------------------

  const tail = {
    active: false,
    source: null,
    retry: null,
    chosen: new Set(), // instances chosen; none: all
    paused: false,
    held: [],
    heldCount: 0,
    pending: [],
    flush: null,
    keys: new Set(),
    typing: null,
  };

  function tailQuery() {
    const params = new URLSearchParams();
    for (const name of tail.chosen) params.append("instance", name);
    const severity = $("tail-severity").value;
    if (severity && severity !== "debug") params.set("severity", severity);
    const origins = ORIGINS.filter((o) => $(`tail-origin-${o}`).checked);
    if (origins.length < ORIGINS.length) for (const o of origins) params.append("origin", o);
    const q = $("tail-q").value;
    if (q) params.set("q", q);
    return params;
  }

  function tailFormFrom(params) {
    tail.chosen = new Set(params.getAll("instance"));
    const severity = params.get("severity");
    $("tail-severity").value = SEVERITIES.includes(severity) ? severity : "debug";
    const origins = params.getAll("origin").filter((o) => ORIGINS.includes(o));
    for (const o of ORIGINS) $(`tail-origin-${o}`).checked = origins.length === 0 || origins.includes(o);
    $("tail-q").value = params.get("q") || "";
    for (const box of $("tail-instances").querySelectorAll("input[data-instance]")) {
      box.checked = tail.chosen.has(box.dataset.instance);
    }
  }

  function renderTailInstances(data) {
    const box = $("tail-instances");
    const names = data.instances.map((i) => String(i.name));
    for (const name of tail.chosen) if (!names.includes(name)) names.push(name);
    const have = [...box.querySelectorAll("input[data-instance]")].map((i) => i.dataset.instance);
    if (have.join("\n") === names.join("\n")) return;
    for (const label of box.querySelectorAll("label")) label.remove();
    for (const name of names) {
      const input = el("input", { type: "checkbox", data: { instance: name } });
      input.checked = tail.chosen.has(name);
      input.addEventListener("change", () => {
        if (input.checked) tail.chosen.add(name);
        else tail.chosen.delete(name);
        tailFiltersChanged();
      });
      box.append(el("label", {}, input, " ", name));
    }
  }

  function tailOpen(params) {
    tail.active = true;
    tailFormFrom(params);
    tailConnect();
  }

  function tailClose() {
    tail.active = false;
    clearTimeout(tail.retry);
    if (tail.source) tail.source.close();
    tail.source = null;
    setTailStatus("idle", "");
  }

  function tailFiltersChanged() {
    const query = tailQuery().toString();
    history.replaceState(null, "", query ? `#/tail?${query}` : "#/tail");
    tailConnect();
  }

  function setTailStatus(state, text) {
    const status = $("tail-status");
    status.dataset.state = state;
    status.textContent = text;
  }

  function tailConnect() {
    clearTimeout(tail.retry);
    if (tail.source) tail.source.close();
    clear($("tail-rows"));
    tail.keys.clear();
    tail.pending = [];
    tail.held = [];
    tail.heldCount = 0;
    showHeld();
    updateTailCount();
    const params = tailQuery();
    params.set("last", String(TAIL_LAST));
    const url = `/api/tail?${params}`;
    const source = new EventSource(url);
    tail.source = source;
    setTailStatus("connecting", "connecting…");
    source.addEventListener("open", () => setTailStatus("following", "following new records"));
    source.addEventListener("record", (event) => {
      let record;
      try {
        record = JSON.parse(event.data);
      } catch (exc) {
        return;
      }
      if (!record || typeof record !== "object") return;
      tailArrived({ record });
    });
    source.addEventListener("skipped", (event) => {
      let count = 0;
      try {
        count = Number(JSON.parse(event.data).count) || 0;
      } catch (exc) {
        return;
      }
      tailArrived({ skipped: count });
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        setTailStatus("down", "disconnected; trying again in 3 s");
        streamRefusal(url).then((sentence) => {
          if (tail.source !== source) return;
          if (sentence) {
            setTailStatus("refused", sentence); // the filters must change first
            return;
          }
          tail.retry = setTimeout(() => {
            if (tail.active && tail.source === source) tailConnect();
          }, 3000);
        });
      } else {
        setTailStatus("connecting", "reconnecting…");
      }
    });
  }

  // Why the server refused a stream, when it says so for good (a 4xx other than
  // 401, which the banner explains); null when trying again may help.
  async function streamRefusal(url) {
    const control = new AbortController();
    try {
      const response = await fetch(url, { credentials: "same-origin", signal: control.signal });
      if (response.ok) return null;
      if (response.status === 401) needToken();
      let body = null;
      try {
        body = await response.json();
      } catch (exc) {
        body = null;
      }
      const permanent = response.status >= 400 && response.status < 500 && response.status !== 401;
      return permanent && body && typeof body.error === "string" ? body.error : null;
    } catch (exc) {
      return null;
    } finally {
      control.abort();
    }
  }

  function recordKey(r) {
    return [r.instance, r.origin, r.boot, r.seq, r.time_ns, r.message].join("\u0000");
  }

  function tailArrived(item) {
    if (item.record) {
      const key = recordKey(item.record);
      if (tail.keys.has(key)) return; // sent again after the stream reconnected
      tail.keys.add(key);
      item.key = key;
    }
    if (tail.paused) {
      tail.heldCount += 1;
      tail.held.push(item);
      if (tail.held.length > TAIL_ROWS) {
        const dropped = tail.held.shift();
        if (dropped.key) tail.keys.delete(dropped.key);
      }
      showHeld();
      return;
    }
    queueRows([item]);
  }

  function queueRows(items) {
    tail.pending.push(...items);
    while (tail.pending.length > TAIL_ROWS) {
      const dropped = tail.pending.shift();
      if (dropped.key) tail.keys.delete(dropped.key);
    }
    if (!tail.flush) tail.flush = setTimeout(flushRows, 30);
  }

  function tailRow(item) {
    if (item.skipped !== undefined) {
      return el(
        "tr",
        { class: "note", data: { skipped: item.skipped } },
        el("td", { colspan: 5 }, `${item.skipped} records left out here (more than the stream sends per second)`),
      );
    }
    const r = item.record;
    const severity = SEVERITIES.includes(r.severity) ? r.severity : "info";
    const row = el(
      "tr",
      {
        class: `sev-${severity}`,
        data: {
          instance: r.instance,
          severity: r.severity,
          origin: r.origin,
          seq: r.seq === undefined ? "" : r.seq,
          key: item.key,
        },
      },
      el("td", { class: "time", title: timeText(r) }, clockTime(r)),
      el("td", {}, el("a", { href: instanceHref(String(r.instance)) }, r.instance)),
      el("td", { class: "sev" }, r.severity),
      el("td", {}, r.origin),
      messageCell(r),
    );
    const where = whereText(r);
    if (where) row.title = where;
    return row;
  }

  function flushRows() {
    tail.flush = null;
    const box = $("tail-box");
    const follow = box.scrollTop + box.clientHeight >= box.scrollHeight - 40;
    const body = $("tail-rows");
    const fragment = document.createDocumentFragment();
    for (const item of tail.pending) fragment.append(tailRow(item));
    tail.pending = [];
    body.append(fragment);
    let excess = body.rows.length - TAIL_ROWS;
    while (excess-- > 0) {
      const first = body.firstElementChild;
      if (first.dataset.key) tail.keys.delete(first.dataset.key);
      first.remove();
    }
    updateTailCount();
    if (follow) box.scrollTop = box.scrollHeight;
  }

  function updateTailCount() {
    const count = $("tail-rows").querySelectorAll("tr[data-key]").length;
    $("tail-count").dataset.count = String(count);
    $("tail-count").textContent = String(count);
  }

  function showHeld() {
    const held = $("tail-held");
    held.dataset.count = String(tail.heldCount);
    held.textContent = tail.paused ? `paused: ${tail.heldCount} new held` : "";
  }

  function setPaused(paused) {
    tail.paused = paused;
    const button = $("tail-pause");
    button.setAttribute("aria-pressed", String(paused));
    button.textContent = paused ? "Resume" : "Pause";
    if (!paused && tail.held.length) {
      const lost = tail.heldCount - tail.held.length;
      const items = tail.held;
      if (lost > 0) items.unshift({ skipped: lost });
      tail.held = [];
      queueRows(items);
    }
    if (!paused) tail.heldCount = 0;
    showHeld();
  }

  // -- one instance --------------------------------------------------------------

  const inst = { name: null, oldestNs: null, crashes: null, loading: 0 };

  function instanceOpen(name) {
    const same = inst.name === name;
    inst.name = name;
    $("inst-name").textContent = name;
    document.title = `${name} · umonitor`;
    if (!same) {
      clear($("inst-summary"));
      for (const id of ["level-result", "action-result", "rec-status"]) {
        $(id).textContent = "";
        delete $(id).dataset.ok;
      }
      $("crash-detail").hidden = true;
      $("rec-form").reset();
      $("rec-severity").value = "debug";
      const known = instanceByName(name);
      $("level-select").value = known && known.level ? known.level : "";
    }
    renderInstanceSummary();
    loadRecords(false);
    loadRate();
    loadCrashes();
    loadConsole();
  }

  const SUMMARY = [
    ["state", "state"],
    ["address", "address"],
    ["uptime", "uptime"],
    ["restarts", "restarts"],
    ["level", "level"],
    ["records", "records"],
    ["crashes", "crashes"],
    ["last-seen", "last record"],
    ["last-exit", "last exit"],
  ];

  // The facts line under the instance's name, updated in place (it changes every
  // second while the fleet is live).
  function renderInstanceSummary() {
    if (!inst.name) return;
    const summary = $("inst-summary");
    const i = instanceByName(inst.name);
    // Stop and restart are the fleet's: only for an instance it runs.
    const runs = Boolean(fleet.data) && (i ? i.fleet !== false : Boolean(fleet.data.fleet));
    for (const id of ["action-stop", "action-restart"]) {
      $(id).disabled = !runs;
      $(id).title = runs || !fleet.data ? "" : "the fleet (umonitor up) does not run this instance";
    }
    if (!i) {
      clear(summary);
      summary.append(el("span", { class: "muted" }, fleet.data ? "not in the fleet's list" : "…"));
      return;
    }
    if (!summary.querySelector("[data-key]")) {
      clear(summary);
      for (const [key, label] of SUMMARY) {
        summary.append(
          el("span", { class: "fact", data: { key } }, el("span", { class: "muted" }, label + " "), el("span", { class: "value" })),
        );
      }
    }
    const values = {
      state: String(i.state || "–"),
      address: i.address ? String(i.address) : "–",
      uptime: duration(i.uptime_s),
      restarts: number(i.restarts),
      level: i.level ? String(i.level) : "–",
      records: number(i.records),
      crashes: number(i.crashes),
      "last-seen": i.last_seen ? fullTime(i.last_seen) : "",
      "last-exit": lastExitText(i.last_exit),
    };
    for (const [key] of SUMMARY) {
      const fact = summary.querySelector(`[data-key="${key}"]`);
      const value = fact.querySelector(".value");
      if (value.textContent !== values[key]) value.textContent = values[key];
      fact.hidden = values[key] === "";
    }
    const select = $("level-select");
    if (!select.value && i.level && SEVERITIES.includes(i.level)) select.value = i.level;
    if (inst.crashes !== null && typeof i.crashes === "number" && i.crashes !== inst.crashes) {
      loadCrashes();
    }
  }

  function recordQuery() {
    const params = new URLSearchParams();
    const q = $("rec-q").value;
    const since = $("rec-since").value.trim();
    const until = $("rec-until").value.trim();
    const severity = $("rec-severity").value;
    const origin = $("rec-origin").value;
    if (q) params.set("q", q);
    if (since) params.set("since", since);
    if (until) params.set("until", until);
    if (severity && severity !== "debug") params.set("severity", severity);
    if (origin) params.set("origin", origin);
    return params;
  }

  async function loadRecords(older) {
    const name = inst.name;
    const params = recordQuery();
    params.set("limit", String(PAGE));
    if (older && inst.oldestNs !== null) params.set("before_ns", String(inst.oldestNs));
    const status = $("rec-status");
    const body = $("rec-rows");
    if (!older) {
      clear(body);
      inst.oldestNs = null;
      $("rec-older").hidden = true;
    }
    status.textContent = "loading…";
    status.dataset.state = "loading";
    const ticket = ++inst.loading;
    let answer;
    try {
      answer = await api(instanceApi(name, `records?${params}`));
    } catch (exc) {
      if (ticket !== inst.loading) return;
      status.textContent = exc.message;
      status.dataset.state = "error";
      return;
    }
    if (ticket !== inst.loading || name !== inst.name) return;
    const records = Array.isArray(answer.records) ? answer.records : [];
    const fragment = document.createDocumentFragment();
    for (const r of records) {
      const severity = SEVERITIES.includes(r.severity) ? r.severity : "info";
      fragment.append(
        el(
          "tr",
          { class: `sev-${severity}`, data: { severity: r.severity, origin: r.origin, seq: r.seq === undefined ? "" : r.seq } },
          el("td", { class: "time", title: timeText(r) }, fullTime(timeText(r))),
          el("td", { class: "sev" }, r.severity),
          el("td", {}, r.origin),
          messageCell(r),
          el("td", { class: "where" }, whereText(r)),
        ),
      );
      if (typeof r.time_ns === "number" && (inst.oldestNs === null || r.time_ns < inst.oldestNs)) {
        inst.oldestNs = r.time_ns;
      }
    }
    body.append(fragment);
    $("rec-older").hidden = !answer.more;
    const shown = body.rows.length;
    status.dataset.state = "done";
    status.dataset.count = String(shown);
    status.textContent = shown
      ? `${shown} record${shown === 1 ? "" : "s"}, newest first${answer.more ? "; older ones match" : ""}`
      : "no record matches";
  }

  async function loadRate() {
    const name = inst.name;
    const params = new URLSearchParams();
    const since = $("rec-since").value.trim();
    const until = $("rec-until").value.trim();
    if (since) params.set("since", since);
    if (until) params.set("until", until);
    const canvas = $("rate-chart");
    let rate;
    try {
      rate = await api(instanceApi(name, `rate?${params}`));
    } catch (exc) {
      canvas.dataset.error = exc.message;
      return;
    }
    if (name !== inst.name) return;
    delete canvas.dataset.error;
    inst.rate = rate;
    window.umonChart.draw(canvas, rate);
    renderLegend(rate);
  }

  function renderLegend(rate) {
    const legend = $("rate-legend");
    clear(legend);
    const series = (rate && rate.series) || {};
    for (const sev of SEVERITIES) {
      const values = series[sev];
      if (!Array.isArray(values) || !values.some((v) => v > 0)) continue;
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.backgroundColor = window.umonChart.COLORS[sev];
      legend.append(el("span", { class: "key", data: { sev } }, swatch, sev), " ");
    }
    const step = Number(rate && rate.step_s) || 1;
    legend.append(el("span", { class: "muted" }, `one bar per ${step} s`));
  }

  async function loadCrashes() {
    const name = inst.name;
    const list = $("crash-list");
    let answer;
    try {
      answer = await api(instanceApi(name, "crashes"));
    } catch (exc) {
      clear(list);
      list.append(el("li", { class: "error" }, exc.message));
      return;
    }
    if (name !== inst.name) return;
    const crashes = Array.isArray(answer.crashes) ? answer.crashes : [];
    const known = instanceByName(name);
    inst.crashes = known && typeof known.crashes === "number" ? known.crashes : crashes.length;
    clear(list);
    for (const c of crashes) {
      const button = el(
        "button",
        { type: "button", class: "crash-open", data: { file: c.file }, "aria-controls": "crash-detail" },
        el("span", { class: "time" }, fullTime(c.time)),
        " ",
        c.kind === "start-failure" ? "failed to start: " : "",
        c.reason || c.file,
      );
      button.addEventListener("click", () => openCrash(c.file, button));
      const item = el("li", {}, button);
      if (c.summary) item.append(el("div", { class: "muted summary-line" }, c.summary));
      list.append(item);
    }
    $("crash-empty").hidden = crashes.length > 0;
  }

  async function openCrash(file, button) {
    const name = inst.name;
    let report;
    try {
      report = await api(instanceApi(name, `crashes/${encodeURIComponent(file)}`));
    } catch (exc) {
      showBanner(`Crash report ${file}: ${exc.message}`);
      return;
    }
    if (name !== inst.name) return;
    for (const b of $("crash-list").querySelectorAll("button")) b.classList.toggle("open", b === button);
    const detail = $("crash-detail");
    detail.dataset.file = file;
    $("crash-file").textContent = file;
    $("crash-reason").textContent = report.reason || "–";
    const fault = report.fault && typeof report.fault === "object" ? report.fault : {};
    const faultParts = [];
    if (fault.reason) faultParts.push(String(fault.reason));
    if (fault.pc) faultParts.push(`pc ${fault.pc}`);
    if (fault.function) faultParts.push(`in ${fault.function}`);
    if (fault.file) faultParts.push(`${fault.file}:${fault.line || 0}`);
    if (fault.address) faultParts.push(`address ${fault.address}`);
    if (report.exit_status !== undefined && report.exit_status !== null) {
      faultParts.push(`exit status ${report.exit_status}`);
    }
    $("crash-fault").textContent = faultParts.join(" · ");
    const body = $("crash-backtrace");
    clear(body);
    const frames = Array.isArray(report.backtrace) ? report.backtrace : [];
    frames.forEach((f, n) => {
      const where = f.file ? `${f.file}:${f.line || 0}` : "";
      body.append(
        el(
          "tr",
          { data: { frame: n } },
          el("td", { class: "num" }, n),
          el("td", { class: "mono" }, f.address || ""),
          el("td", { class: "mono" }, (f.function || "??") + (f.inlined ? " (inlined)" : "")),
          el("td", { class: "mono" }, where),
        ),
      );
    });
    $("crash-no-backtrace").hidden = frames.length > 0;
    const extra = [];
    const section = (title, lines) => {
      if (Array.isArray(lines) && lines.length) extra.push(`— ${title} —`, ...lines.map(String));
    };
    section("capture notes", report.capture_errors);
    section("console", report.console);
    section("application", report.app);
    if (report.qemu_stderr) section("QEMU stderr", String(report.qemu_stderr).split("\n"));
    $("crash-extra").textContent = extra.join("\n");
    detail.hidden = false;
    $("crash-file").tabIndex = -1;
    $("crash-file").focus();
  }

  async function loadConsole() {
    const name = inst.name;
    const box = $("console-lines");
    let answer;
    try {
      answer = await api(instanceApi(name, "console?lines=200"));
    } catch (exc) {
      box.textContent = exc.message;
      box.dataset.state = "error";
      return;
    }
    if (name !== inst.name) return;
    const lines = Array.isArray(answer.lines) ? answer.lines : [];
    box.textContent = lines.length
      ? lines.map((l) => `${clockTime(l)}  ${l.message === undefined ? "" : l.message}`).join("\n")
      : "No console lines.";
    box.dataset.state = "done";
    box.dataset.count = String(lines.length);
    box.scrollTop = box.scrollHeight;
  }

  async function act(action) {
    const name = inst.name;
    const out = $("action-result");
    const button = $(`action-${action}`);
    button.disabled = true;
    out.textContent = `${action}…`;
    delete out.dataset.ok;
    try {
      await post(instanceApi(name, action), {});
      out.textContent = action === "stop" ? `${name} stopped` : `${name} restarted`;
      out.dataset.ok = "true";
    } catch (exc) {
      out.textContent = exc.message;
      out.dataset.ok = "false";
    } finally {
      button.disabled = false;
    }
  }

  async function setLevel() {
    const name = inst.name;
    const level = $("level-select").value;
    const out = $("level-result");
    if (!level) {
      out.textContent = "choose a level first";
      out.dataset.ok = "false";
      return;
    }
    const button = $("level-apply");
    button.disabled = true;
    out.textContent = `asking ${name} for ${level}…`;
    delete out.dataset.ok;
    delete out.dataset.level;
    delete out.dataset.confirmed;
    try {
      const answer = (await post(instanceApi(name, "level"), { level }, true)) || {};
      const now = answer.level ? String(answer.level) : level;
      const was = answer.was ? ` (was ${answer.was})` : "";
      out.textContent =
        answer.confirmed === false
          ? `${name}: level ${now} sent${was}; its library does not confirm levels`
          : `${name} acknowledged level ${now}${was}`;
      out.dataset.ok = "true";
      out.dataset.level = now;
      out.dataset.confirmed = String(answer.confirmed !== false);
    } catch (exc) {
      out.textContent = exc.message;
      out.dataset.ok = "false";
    } finally {
      button.disabled = false;
    }
  }

  // -- routing -------------------------------------------------------------------

  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const at = raw.indexOf("?");
    const path = at < 0 ? raw : raw.slice(0, at);
    return { path, params: new URLSearchParams(at < 0 ? "" : raw.slice(at + 1)) };
  }

  function show(view) {
    for (const v of ["fleet", "tail", "instance"]) $(`view-${v}`).hidden = v !== view;
    for (const link of document.querySelectorAll("nav a[data-view]")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.body.dataset.view = view;
  }

  function route() {
    const { path, params } = parseHash();
    if (path.startsWith("/instance/") && path.length > "/instance/".length) {
      let name;
      try {
        name = decodeURIComponent(path.slice("/instance/".length));
      } catch (exc) {
        name = path.slice("/instance/".length);
      }
      tailClose();
      show("instance");
      instanceOpen(name);
    } else if (path === "/tail") {
      show("tail");
      document.title = "live tail · umonitor";
      tailOpen(params);
    } else {
      tailClose();
      inst.name = null;
      show("fleet");
      document.title = "fleet · umonitor";
    }
  }

  function wire() {
    severityOptions($("tail-severity"), "debug (everything)");
    severityOptions($("rec-severity"), "debug (everything)");
    const level = $("level-select");
    level.append(el("option", { value: "" }, "choose…"));
    for (const sev of SEVERITIES) level.append(el("option", { value: sev }, sev));
    $("tail-limit").textContent = String(TAIL_ROWS);

    $("tail-form").addEventListener("submit", (e) => e.preventDefault());
    $("tail-severity").addEventListener("change", tailFiltersChanged);
    for (const o of ORIGINS) $(`tail-origin-${o}`).addEventListener("change", tailFiltersChanged);
    $("tail-q").addEventListener("input", () => {
      clearTimeout(tail.typing);
      tail.typing = setTimeout(tailFiltersChanged, 300);
    });
    $("tail-pause").addEventListener("click", () => setPaused(!tail.paused));

    $("rec-form").addEventListener("submit", (e) => {
      e.preventDefault();
      loadRecords(false);
      loadRate();
    });
    $("rec-older").addEventListener("click", () => loadRecords(true));
    $("console-refresh").addEventListener("click", loadConsole);
    $("action-stop").addEventListener("click", () => act("stop"));
    $("action-restart").addEventListener("click", () => act("restart"));
    $("level-apply").addEventListener("click", setLevel);

    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        if (inst.name && inst.rate) window.umonChart.draw($("rate-chart"), inst.rate);
      }, 200);
    });
    window.addEventListener("hashchange", route);
    // A page left for another keeps its connections while the browser caches it
    // (back/forward); a browser opens only six to one server, so the streams end
    // with the page and start again if it is shown again.
    window.addEventListener("pagehide", () => {
      clearTimeout(fleet.retry);
      if (fleet.source) fleet.source.close();
      fleet.source = null;
      if (tail.active) {
        clearTimeout(tail.retry);
        if (tail.source) tail.source.close();
        tail.source = null;
      }
    });
    window.addEventListener("pageshow", (event) => {
      if (!event.persisted) return;
      startFleetStream();
      if (tail.active) tailConnect();
    });
  }

  wire();
  route();
  startFleetStream();
})();
