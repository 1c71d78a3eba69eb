// The dashboard: polls the read-only JSON API every few seconds and redraws. Every value from the
// journal is put in the page as text (never as HTML).
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  const every = Math.max(1, Number(params.get("refresh")) || 5);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const tokenQuery = token ? "?token=" + encodeURIComponent(token) : "";
  // follow: show the newest running run (else the newest run) and switch when another starts.
  const state = { runId: params.get("run"), follow: !params.get("run"), refreshes: 0, errors: [], busy: false };
  window.dashboard = state;
  const $ = (id) => document.getElementById(id);

  async function api(path) {
    const r = await fetch(path, { headers, cache: "no-store" });
    if (!r.ok) {
      let detail = "";
      try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
      throw new Error(`${r.status} ${detail || r.statusText}`);
    }
    return r.json();
  }

  function el(tag, opts = {}, ...children) {
    const e = document.createElement(tag);
    if (opts.cls) e.className = opts.cls;
    if (opts.title) e.title = opts.title;
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return e;
  }

  // -- formatting -------------------------------------------------------------------------------
  const time = (iso) => (iso ? iso.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "") : "–");
  const plotTime = (iso) => iso.replace("T", " ").replace("Z", "");
  function fixed(v, digits = 2) {
    const f = Number(v);
    if (v === null || v === undefined || v === "" || !Number.isFinite(f)) return "–";
    return f.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  const qty = (v) => (v === null || v === undefined ? "–" : String(Number(v)));
  const pct = (v) => (v === null || v === undefined || !Number.isFinite(Number(v)) ? "–" : (Number(v) * 100).toFixed(2) + "%");
  const tone = (v) => (Number(v) > 0 ? "pos" : Number(v) < 0 ? "neg" : "");

  function banner(text) {
    const b = $("banner");
    b.hidden = !text;
    b.textContent = text || "";
  }

  // -- the run picker -----------------------------------------------------------------------------
  function label(r) {
    const markets = r.markets.length > 1 ? `${r.markets.length} markets` : r.symbol + " " + r.timeframe;
    return `${r.id} · ${r.mode} · ${r.status} · ${r.strategy.split(",")[0]} · ${markets} · ${time(r.started_at)}`;
  }

  function choose(runs) {
    if (state.follow) {
      const running = runs.find((r) => r.status === "running");
      state.runId = (running || runs[0] || {}).id || null;
    }
    return runs.find((r) => r.id === state.runId) || null;
  }

  function renderPicker(runs) {
    const sel = $("run-picker");
    const want = state.follow ? "" : state.runId;
    const options = [["", "follow the latest running run"], ...runs.map((r) => [r.id, label(r)])];
    if (!state.follow && !runs.some((r) => r.id === state.runId)) options.push([state.runId, state.runId]);
    const key = JSON.stringify(options);
    if (sel.dataset.key !== key) {
      sel.replaceChildren(...options.map(([v, t]) => { const o = el("option", {}, t); o.value = v; return o; }));
      sel.dataset.key = key;
    }
    sel.value = want;
  }

  $("run-picker").addEventListener("change", (ev) => {
    state.follow = ev.target.value === "";
    state.runId = ev.target.value || null;
    const p = new URLSearchParams(location.search);
    if (state.follow) p.delete("run"); else p.set("run", state.runId);
    history.replaceState(null, "", "?" + p.toString());
    refresh();
  });

  // -- panels -------------------------------------------------------------------------------------
  function renderHeader(run) {
    const s = $("run-status");
    s.textContent = run.status;
    s.className = "badge " + run.status;
    const markets = run.markets.length > 1 ? run.markets.join(", ") : `${run.symbol} ${run.timeframe}`;
    $("run-meta").textContent = `${run.mode} · ${run.strategy} · ${markets} · ${run.bars.toLocaleString()} bars`;
    $("report-link").href = `/runs/${encodeURIComponent(run.id)}/report${tokenQuery}`;
    document.title = `${run.status === "running" ? "● " : ""}${run.id} · bybit-ml-bot`;
  }

  function card(labelText, value, cls = "") {
    return el("div", { cls: "card" }, el("div", { cls: "card-label" }, labelText), el("div", { cls: "card-value " + cls }, value));
  }

  function renderCards(s) {
    $("cards").replaceChildren(
      card("equity", fixed(s.final_equity)),
      card("total return", pct(s.total_return), tone(s.total_return)),
      card("max drawdown", pct(s.max_drawdown), s.max_drawdown ? "neg" : ""),
      card("Sharpe", fixed(s.sharpe)),
      card("trades", s.n_trades ?? "–"),
      card("win rate", pct(s.win_rate)),
      card("last bar", time(s.end), "when-value"),
    );
  }

  function renderEquity(eq, run) {
    const div = $("equity-chart");
    const pts = eq.points;
    $("equity-note").textContent = eq.total > pts.length
      ? `${eq.total.toLocaleString()} marks, drawn as ${pts.length.toLocaleString()}` : `${eq.total.toLocaleString()} marks`;
    if (typeof Plotly === "undefined") { div.textContent = "plotly.js did not load"; return; }
    const style = getComputedStyle(document.body);
    const color = (name) => style.getPropertyValue(name).trim();
    const x = pts.map((p) => plotTime(p.time));
    const trace = { x, y: pts.map((p) => p.equity), type: "scatter", mode: "lines", name: "equity",
      line: { color: color("--accent"), width: 1.8 }, hovertemplate: "%{x|%Y-%m-%d %H:%M}<br>equity %{y:,.2f}<extra></extra>" };
    const cash = Number(eq.initial_cash);
    const layout = {
      margin: { l: 64, r: 16, t: 8, b: 36 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: color("--text"), size: 12 }, showlegend: false, uirevision: run.id,
      xaxis: { gridcolor: color("--border"), linecolor: color("--border") },
      yaxis: { gridcolor: color("--border"), linecolor: color("--border"), tickformat: ",.0f" },
      shapes: x.length ? [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: cash, y1: cash,
        line: { color: color("--muted"), width: 1, dash: "dot" } }] : [],
    };
    Plotly.react(div, [trace], layout, { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] });
  }

  function rows(tbody, list, cols, empty) {
    const n = tbody.closest("table").tHead.rows[0].cells.length;
    if (!list.length) {
      const td = el("td", {}, empty);
      td.colSpan = n;
      tbody.replaceChildren(el("tr", { cls: "empty" }, td));
      return;
    }
    tbody.replaceChildren(...list.map((item) => el("tr", {}, ...cols.map(([get, cls]) => el("td", { cls: cls ? cls(item) : "" }, get(item))))));
  }

  function renderPositions(items) {
    rows($("positions").tBodies[0], items, [
      [(p) => p.symbol], [(p) => p.side, (p) => (p.side === "long" ? "pos" : p.side === "short" ? "neg" : "muted")],
      [(p) => qty(p.qty), () => "num"], [(p) => fixed(p.avg_entry_price), () => "num"],
      [(p) => fixed(p.mark_price), () => "num"], [(p) => fixed(p.notional), () => "num"],
      [(p) => fixed(p.unrealized_pnl), (p) => "num " + tone(p.unrealized_pnl)],
      [(p) => fixed(p.realized_pnl), (p) => "num " + tone(p.realized_pnl)],
      [(p) => fixed(p.fees), () => "num"], [(p) => p.working_orders, () => "num"],
    ], "no market marked yet");
  }

  function renderDecisions(items) {
    rows($("decisions").tBodies[0], items, [
      [(d) => time(d.bar_time)], [(d) => d.symbol],
      [(d) => el("span", { cls: "badge " + d.status }, d.status)],
      [(d) => fixed(d.target), () => "num"], [(d) => fixed(d.confidence), () => "num"],
      [(d) => fixed(d.price), () => "num"], [(d) => d.why || "–", () => "why"],
    ], "no decisions yet");
  }

  function renderAlerts(items) {
    const ul = $("alerts");
    if (!items.length) { ul.replaceChildren(el("li", { cls: "none" }, "no alerts: no kill switch, rejection, stale feed or reconciliation trouble")); return; }
    ul.replaceChildren(...items.map((a) => el("li", { title: a.kind },
      el("span", { cls: "dot " + a.severity }), el("span", { cls: "when" }, time(a.time)), el("span", {}, a.message))));
  }

  function renderEmpty() {
    $("cards").replaceChildren(el("div", { cls: "card" }, "The journal has no runs yet: start one with bot backtest or bot run."));
    document.body.dataset.state = "empty";
  }

  // -- the poll -----------------------------------------------------------------------------------
  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    try {
      const runs = (await api("/api/runs?limit=100")).items;
      const run = choose(runs);
      renderPicker(runs);
      if (!state.runId) { renderEmpty(); return; }
      const id = "/api/runs/" + encodeURIComponent(state.runId);
      const [summary, equity, positions, decisions, alerts] = await Promise.all([
        api(id + "/summary"), api(id + "/equity?points=1500"), api(id + "/positions"),
        api(id + "/decisions?limit=25"), api(id + "/alerts?limit=25")]);
      renderHeader(run || { ...summary, id: state.runId, markets: [], bars: summary.candles || 0 });
      renderCards(summary);
      renderEquity(equity, run || { id: state.runId });
      renderPositions(positions.items);
      renderDecisions(decisions.items);
      renderAlerts(alerts.items);
      state.refreshes += 1;
      banner(null);
      $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
      document.body.dataset.state = "ready";
    } catch (e) {
      state.errors.push(String(e.message || e));
      banner("cannot read the journal API: " + (e.message || e) + " (retrying)");
    } finally {
      state.busy = false;
    }
  }

  $("every").textContent = every;
  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, every * 1000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
})();
