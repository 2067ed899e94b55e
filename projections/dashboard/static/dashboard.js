/* The pipeline dashboard: board, funnel, time in stage, win rates, coverage and shape, stale deals.
   Every figure comes from the API; each shown figure carries the raw API value in data-value. */
"use strict";

(() => {
  const { h, s, figure, hbars, api, hasPath, hasParam } = DF;
  const $ = (id) => document.getElementById(id);
  const COLORS = ["#2f6fde", "#3d84e6", "#4f97ea", "#65a9ee", "#7dbaf1", "#97caf4", "#b1d8f7", "#c9e4f9"];

  const state = {
    pipeline: DF.params.get("pipeline") || "default",
    asOfDate: DF.params.get("as_of") || "",
    target: DF.params.get("target") || "",
  };

  function asOf() {
    // A date means the end of that day (UTC); a full timestamp is passed through.
    if (!state.asOfDate) return "";
    return /^\d{4}-\d{2}-\d{2}$/.test(state.asOfDate) ? state.asOfDate + "T23:59:59Z" : state.asOfDate;
  }

  function setStatus(value) { document.body.dataset.state = value; }

  function message(text, kind) {
    const box = $("message");
    box.className = "notice" + (kind ? " " + kind : "");
    box.textContent = text;
  }

  // -- controls -------------------------------------------------------------------------------
  function initControls() {
    $("pipeline").value = state.pipeline;
    $("as_of").value = /^\d{4}-\d{2}-\d{2}/.test(state.asOfDate) ? state.asOfDate.slice(0, 10) : "";
    $("target").value = state.target;
    $("controls").addEventListener("submit", (event) => {
      event.preventDefault();
      const url = new URL(window.location.href);
      url.searchParams.delete("token");
      for (const key of ["pipeline", "as_of", "target"]) {
        const value = $(key).value.trim();
        if (value) url.searchParams.set(key, value); else url.searchParams.delete(key);
      }
      window.location.href = url.toString();
    });
    $("change-token").addEventListener("click", () => $("token-panel").classList.toggle("hidden"));
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (value) DF.setToken(value);
    });
  }

  // -- KPI tiles ------------------------------------------------------------------------------
  function renderKpis(m) {
    const cur = m.currency;
    const tiles = [
      ["Open deals", "open_deals", DF.fmtInt(m.open_deals)],
      ["Pipeline value", "open_value", DF.fmtMoney(m.open_value, cur)],
      ["Weighted value", "weighted_value", DF.fmtMoney(m.weighted_value, cur)],
      ["Won", "won", DF.fmtInt(m.won), "good"],
      ["Lost", "lost", DF.fmtInt(m.lost)],
      ["Win rate", "win_rate", DF.fmtPct(m.win_rate), "good"],
      ["Won value", "won_value", DF.fmtMoney(m.won_value, cur), "good"],
      ["Avg days to close (won)", "avg_days_to_close_won", DF.fmtDays(m.avg_days_to_close_won)],
      ["Median days to close (won)", "median_days_to_close_won", DF.fmtDays(m.median_days_to_close_won)],
      ["Qualified leads", "qualified_leads", DF.fmtInt(m.qualified_leads)],
      ["Conversion (won / opened)", "conversion_rate", DF.fmtPct(m.conversion_rate)],
      ["Avg open deal age", "avg_open_deal_age_days", DF.fmtDays(m.avg_open_deal_age_days)],
      ["Stale deals", "stale_deals", DF.fmtInt(m.stale_deals), m.stale_deals ? "warn" : ""],
    ];
    DF.fill($("kpis"), 
      ...tiles.map(([label, key, text, kind]) =>
        h("div", { class: "kpi " + (kind || "") }, h("div", { class: "label" }, label), figure("div", key, m[key], text, { class: "value" }))
      )
    );
  }

  // -- board ----------------------------------------------------------------------------------
  function dealCard(deal, currency) {
    const days = deal.days_in_stage === null || deal.days_in_stage === undefined ? "" : Math.floor(deal.days_in_stage) + " d in stage";
    return h(
      "a",
      { class: "deal" + (deal.stale ? " stale" : ""), href: "/deals/" + encodeURIComponent(deal.deal_id), "data-deal": deal.deal_id, "data-stale": deal.stale ? "true" : "false", title: deal.name },
      h("div", { class: "name" }, deal.name),
      h("div", { class: "meta" }, h("span", {}, DF.fmtMoney(deal.amount, deal.currency || currency)), h("span", {}, deal.owner || "")),
      h("div", { class: "meta" }, h("span", {}, days), deal.stale ? h("span", { class: "badge stale" }, "stale") : null),
      deal.next_step ? h("div", { class: "next-step", "data-kind": deal.next_step.kind, title: "next best step" }, "→ " + deal.next_step.text) : null
    );
  }

  function renderBoard(board) {
    const cur = board.currency;
    $("board-hint").textContent = `${DF.fmtInt(board.open_deals)} open deals · ${DF.fmtMoney(board.open_value, cur)} · longest in stage first`;
    DF.fill($("board"), 
      ...board.columns.map((c) => {
        const shown = c.deals.length;
        return h(
          "div",
          { class: "column", "data-stage": c.stage, "data-count": c.count, "data-value": c.value, "data-weighted": c.weighted_value },
          h("h3", {}, c.name || c.stage),
          h(
            "div",
            { class: "totals" },
            figure("b", "board.count", c.count, DF.fmtInt(c.count)), " deals · ",
            figure("b", "board.value", c.value, DF.fmtMoney(c.value, cur)), h("br"),
            "weighted ", figure("b", "board.weighted_value", c.weighted_value, DF.fmtMoney(c.weighted_value, cur)),
            ` (${Math.round((c.probability || 0) * 100)}%)`,
            c.stale_count ? h("span", {}, " · ", h("span", { class: "badge stale" }, DF.fmtInt(c.stale_count) + " stale")) : null
          ),
          ...c.deals.map((d) => dealCard(d, cur)),
          c.count > shown ? h("div", { class: "more" }, `+ ${DF.fmtInt(c.count - shown)} more`) : null
        );
      })
    );
  }

  // -- forecast by expected close month -------------------------------------------------------
  function forecastMonths() {
    // Twelve months from the month of the as-of date (or now).
    const at = asOf() ? new Date(asOf()) : new Date();
    const first = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), 1));
    const last = new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 11, 1));
    const ym = (d) => d.toISOString().slice(0, 7);
    return { from: ym(first), to: ym(last) };
  }

  function renderForecast(f) {
    const cur = f.currency;
    const money = (key, v) => figure("span", key, v, DF.fmtMoney(v, cur));
    const head = ["Month", "Closed won", "Commit (weighted)", "Best case", "Pipeline", "Target", "Gap"];
    const rows = [...f.months, Object.assign({ month: "Total" }, f.totals)].map((r) =>
      h("tr", { "data-month": r.month },
        h("td", {}, r.month),
        h("td", {}, money("forecast.closed_won", r.closed_won.value)),
        h("td", {}, money("forecast.commit", r.commit.value), h("span", { class: "muted small" }, " (", money("forecast.commit_weighted", r.commit.weighted_value), ")")),
        h("td", {}, money("forecast.best_case", r.best_case.value)),
        h("td", {}, money("forecast.pipeline", r.pipeline.value)),
        h("td", {}, r.target === null ? "—" : money("forecast.target", r.target)),
        h("td", {}, r.gap === null ? "—" : money("forecast.gap", r.gap))));
    const undated = f.undated;
    const undatedCount = undated.commit.deals + undated.best_case.deals + undated.pipeline.deals;
    DF.fill($("forecast"),
      h("table", { class: "data" }, h("thead", {}, h("tr", {}, ...head.map((c) => h("th", {}, c)))), h("tbody", {}, ...rows)),
      h("p", { class: "muted small" },
        `${DF.fmtInt(undatedCount)} open deals without an expected close date are not in the months`,
        f.unqualified_deals ? ` · ${DF.fmtInt(f.unqualified_deals)} unqualified deals left out` : "",
        f.months[0].target === null ? " · set a target above (per month: ÷ 12) to see the gap" : ""));
  }

  // -- top-scored open deals ------------------------------------------------------------------
  function reasonText(r) {
    if (r.rule !== undefined) return `${r.rule} ${r.points > 0 ? "+" : ""}${r.points}`;
    return `${r.feature}=${r.value} ${r.contribution > 0 ? "+" : ""}${Number(r.contribution).toFixed(2)}`;
  }

  function renderScored(list) {
    const deals = list.deals || [];
    $("scored-hint").textContent = list.model
      ? `model version ${list.model.version}: P(won) learned from the closed deals, with its strongest reasons`
      : "no model yet: the pipeline's point rules (too few closed deals)";
    DF.fill($("scored"),
      deals.length
        ? h("table", { class: "data" },
            h("thead", {}, h("tr", {}, ...["Score", "Deal", "Stage", "Owner", "Why"].map((c) => h("th", {}, c)))),
            h("tbody", {}, ...deals.map((d) => h("tr", { "data-deal": d.deal_id },
              h("td", {}, figure("b", "score", d.score, d.score === null ? "—" : String(d.score)), h("span", { class: "muted small" }, " " + d.score_kind)),
              h("td", {}, h("a", { href: "/deals/" + encodeURIComponent(d.deal_id) }, d.name)),
              h("td", {}, d.stage),
              h("td", {}, d.owner || ""),
              h("td", { class: "small" }, (d.score_reasons || []).slice(0, 3).map(reasonText).join(" · "))))))
        : h("p", { class: "muted" }, "No open deal."));
  }

  // -- funnel ---------------------------------------------------------------------------------
  function renderFunnel(m) {
    const stages = m.stages || [];
    const rows = [...stages.map((st) => ({ label: st.name || st.stage, stage: st.stage, value: st.entered, st })), { label: "Won", stage: "won", value: m.won, won: true }];
    const width = 600, labelW = 190, textW = 150, bar = 22, gap = 16;
    const plot = width - labelW - textW;
    const max = Math.max(1, ...rows.map((r) => r.value || 0));
    const height = rows.length * (bar + gap) + 4;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "funnel" });
    rows.forEach((r, i) => {
      const y = 4 + i * (bar + gap);
      const w = Math.max((r.value || 0) / max * plot, r.value ? 2 : 0);
      const x = labelW + (plot - w) / 2;
      const g = s("g", { "data-stage": r.stage, "data-entered": r.value });
      g.append(
        s("text", { x: labelW - 8, y: y + bar * 0.7, "text-anchor": "end", text: DF.clip(r.label, 26) }, s("title", { text: r.label })),
        s("rect", { x, y, width: w, height: bar, rx: 3, fill: r.won ? "#1f9d55" : COLORS[Math.min(i, COLORS.length - 1)] }, s("title", { text: `${r.label}: ${DF.fmtInt(r.value)}` })),
        s("text", { x: labelW + plot + 8, y: y + bar * 0.7, text: DF.fmtInt(r.value) + (r.won ? " won" : " entered") })
      );
      svg.append(g);
      if (!r.won) {
        const rate = r.st.conversion_rate;
        svg.append(
          s("text", { x: labelW + plot / 2, y: y + bar + gap * 0.78, "text-anchor": "middle", class: "muted", "data-metric": "stage.conversion_rate", "data-stage": r.stage, "data-value": rate === null ? "" : rate,
            text: rate === null ? "↓ –" : `↓ ${DF.fmtPct(rate)} advanced (${DF.fmtInt(r.st.advanced)})` })
        );
      }
    });
    const table = h("table", { class: "data small" },
      h("thead", {}, h("tr", {}, h("th", {}, "stage"), h("th", {}, "entered"), h("th", {}, "advanced"), h("th", {}, "conversion"), h("th", {}, "open"), h("th", {}, "stale"))),
      h("tbody", {}, ...stages.map((st) => h("tr", { "data-stage": st.stage },
        h("td", {}, st.name || st.stage),
        figure("td", "stage.entered", st.entered, DF.fmtInt(st.entered)),
        figure("td", "stage.advanced", st.advanced, DF.fmtInt(st.advanced)),
        figure("td", "stage.conversion", st.conversion_rate, DF.fmtPct(st.conversion_rate)),
        figure("td", "stage.open_deals", st.open_deals, DF.fmtInt(st.open_deals)),
        figure("td", "stage.stale_deals", st.stale_deals, DF.fmtInt(st.stale_deals))
      )))
    );
    DF.fill($("funnel"), svg, h("details", {}, h("summary", { class: "muted small" }, "figures"), table));
  }

  // -- time in stage --------------------------------------------------------------------------
  function renderTimeInStage(m, definition) {
    const limits = {};
    for (const st of (definition && definition.stages) || []) limits[st.id] = st.max_days_in_stage;
    const rows = (m.stages || []).map((st) => ({
      label: st.name || st.stage,
      value: st.avg_days_in_stage || 0,
      text: DF.fmtDays(st.avg_days_in_stage) + (limits[st.stage] ? ` (limit ${limits[st.stage]} d)` : ""),
      color: limits[st.stage] && st.avg_days_in_stage > limits[st.stage] ? "#c77700" : "#2f6fde",
      title: `${st.name}: ${DF.fmtDays(st.avg_days_in_stage)}`,
      attrs: { "data-metric": "stage.avg_days_in_stage", "data-stage": st.stage, "data-value": st.avg_days_in_stage === null ? "" : st.avg_days_in_stage },
    }));
    const anyStay = (m.stages || []).some((st) => st.avg_days_in_stage !== null);
    DF.fill($("time-in-stage"), 
      hbars(rows, { width: 600, labelWidth: 190, textWidth: 140, label: "average days in each stage" }),
      anyStay ? null : h("p", { class: "muted small" }, "No completed stay yet.")
    );
  }

  // -- breakdowns -----------------------------------------------------------------------------
  function renderBreakdown(container, data, by, currency) {
    const rows = [...(data.rows || [])].sort((a, b) => {
      const x = a.win_rate === null ? -1 : a.win_rate, y = b.win_rate === null ? -1 : b.win_rate;
      return y - x || (b.deals - a.deals);
    });
    const none = by === "industry" ? "(no industry)" : "(none)";
    const chart = hbars(
      rows.map((r) => ({
        label: r.key === null ? none : r.key,
        value: r.win_rate || 0,
        text: r.win_rate === null ? "no closed deal" : `${DF.fmtPct(r.win_rate)} · ${DF.fmtInt(r.won)}/${DF.fmtInt(r.won + r.lost)}`,
        color: r.key === null ? "#9aa3b5" : "#1f9d55",
        title: `${r.key === null ? none : r.key}: ${DF.fmtInt(r.deals)} deals`,
      })),
      { width: 580, labelWidth: 160, textWidth: 130, max: 1, label: "win rate by " + by }
    );
    const table = h("table", { class: "data small", "data-breakdown": by },
      h("thead", {}, h("tr", {}, ...[by.replace("_", " "), "deals", "open", "won", "lost", "win rate", "won value", "avg days to close"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...rows.map((r) => h("tr", { "data-key": r.key === null ? "" : r.key },
        h("td", { class: "text" }, r.key === null ? none : r.key),
        figure("td", "deals", r.deals, DF.fmtInt(r.deals)),
        figure("td", "open_deals", r.open_deals, DF.fmtInt(r.open_deals)),
        figure("td", "won", r.won, DF.fmtInt(r.won)),
        figure("td", "lost", r.lost, DF.fmtInt(r.lost)),
        figure("td", "win_rate", r.win_rate, DF.fmtPct(r.win_rate)),
        figure("td", "won_value", r.won_value, DF.fmtMoney(r.won_value, currency)),
        figure("td", "avg_days_to_close_won", r.avg_days_to_close_won, DF.fmtDays(r.avg_days_to_close_won))
      )))
    );
    const onlyNone = rows.length === 1 && rows[0].key === null;
    DF.fill(container, 
      rows.length ? chart : h("p", { class: "muted" }, "No deals."),
      onlyNone ? h("p", { class: "muted small" }, `No deal in this pipeline has a ${by.replace("_", " ")} yet.`) : null,
      h("details", {}, h("summary", { class: "muted small" }, "table"), table)
    );
  }

  // -- coverage and shape ---------------------------------------------------------------------
  function renderCoverage(m) {
    const cur = m.currency;
    const parts = [];
    if (m.coverage_ratio !== undefined) {
      parts.push(
        h("div", {}, figure("span", "coverage_ratio", m.coverage_ratio, DF.fmtRatio(m.coverage_ratio), { class: "big" }), " ", h("span", { class: "muted" }, "coverage")),
        h("p", { class: "muted small" },
          `open pipeline ${DF.fmtMoney(m.open_value, cur)} ÷ (target ${DF.fmtMoney(m.target, cur)} − won ${DF.fmtMoney(m.won_value, cur)})`,
          m.coverage_ratio === null ? " — target already reached" : "",
          m.coverage_ratio !== null && m.coverage_ratio < 3 ? " — below the usual 3× rule of thumb" : "")
      );
    } else {
      parts.push(h("p", { class: "muted" }, "Set a target above to see the coverage ratio (open pipeline value ÷ what is left to win)."));
    }
    const shape = m.shape;
    if (shape && typeof shape === "object") {
      const early = shape.early_share || 0, late = shape.late_share || 0, mid = Math.max(0, 1 - early - late);
      const label = shape.label || "no open value";
      parts.push(
        h("h3", { class: "small" }, "Shape: ", figure("span", "shape.label", shape.label, label)),
        h("div", { class: "shape-bar", role: "img", "aria-label": "open value early versus late stages" },
          early ? h("div", { style: `width:${early * 100}%;background:#2f6fde`, title: "earlier stages: " + (shape.early_stages || []).join(", ") }, DF.fmtPct(early)) : null,
          mid > 0.0005 ? h("div", { style: `width:${mid * 100}%;background:#9aa3b5`, title: "middle stage" }, mid > 0.08 ? DF.fmtPct(mid) : "") : null,
          late ? h("div", { style: `width:${late * 100}%;background:#1f9d55`, title: "later stages: " + (shape.late_stages || []).join(", ") }, DF.fmtPct(late)) : null
        ),
        h("p", { class: "muted small" },
          `earlier stages (${(shape.early_stages || []).join(", ")}): `, figure("span", "shape.early_value", shape.early_value, DF.fmtMoney(shape.early_value, cur)),
          h("br"),
          `later stages (${(shape.late_stages || []).join(", ")}): `, figure("span", "shape.late_value", shape.late_value, DF.fmtMoney(shape.late_value, cur))),
        h("p", { class: "small" },
          shape.label === "top-heavy" ? "Most value is early: nurture and qualify to move it along."
            : shape.label === "bottom-heavy" ? "Most value is late: close it, and prospect to refill the top."
            : shape.label === "balanced" ? "Value is spread evenly across the pipeline." : "")
      );
    } else if (typeof shape === "string") {
      parts.push(h("h3", { class: "small" }, "Shape: ", figure("span", "shape.label", shape, shape)));
    }
    DF.fill($("coverage"), ...parts);
  }

  // -- stale deals ----------------------------------------------------------------------------
  function renderStale(list, m) {
    const deals = list.deals || [];
    const total = m.stale_deals;
    DF.fill($("stale"), 
      h("p", {}, figure("b", "stale.count", total, DF.fmtInt(total)), " stale deals", deals.length < total ? ` (showing the ${deals.length} newest)` : ""),
      deals.length
        ? h("table", { class: "data small", id: "stale-table" },
            h("thead", {}, h("tr", {}, ...["deal", "stage", "owner", "days in stage", "amount"].map((t) => h("th", {}, t)))),
            h("tbody", {}, ...deals.map((d) => h("tr", { "data-deal": d.deal_id },
              h("td", { class: "text" }, h("a", { href: "/deals/" + encodeURIComponent(d.deal_id) }, d.name)),
              h("td", {}, d.stage), h("td", {}, d.owner || "–"),
              h("td", {}, d.days_in_stage === null || d.days_in_stage === undefined ? "–" : DF.fmtInt(Math.floor(d.days_in_stage))),
              h("td", {}, DF.fmtMoney(d.amount, d.currency || m.currency))
            ))))
        : h("p", { class: "muted" }, "No stale deal.")
    );
  }

  // -- loading --------------------------------------------------------------------------------
  async function optional(path, template, query, render) {
    if (!(await hasPath(template))) return null;
    const q = Object.assign({}, query);
    if (q.as_of && !(await hasParam(template, "as_of"))) delete q.as_of;
    const data = await api(path, q);
    render(data);
    return data;
  }

  async function load() {
    setStatus("loading");
    initControls();
    if (!DF.token()) {
      $("token-panel").classList.remove("hidden");
      message("No token yet: paste one above (dealflow demo prints a link that carries it).", "");
      setStatus("needs-token");
      return;
    }
    const p = encodeURIComponent(state.pipeline);
    const when = asOf();
    const base = when ? { as_of: when } : {};
    try {
      const definition = await api(`/v1/pipelines/${p}`);
      $("pipeline-title").textContent = `${definition.name || state.pipeline} · v${definition.version}` + (when ? ` · as of ${when}` : " · now");
      document.title = `dealflow · ${definition.name || state.pipeline}`;
      const loaded = { definition };
      if (!(await hasPath("/v1/pipelines/{pipeline_id}/metrics"))) {
        message("The metrics API is not available on this server yet.", "error");
        setStatus("ready");
        window.dealflowDashboard = loaded;
        return;
      }
      const m = await api(`/v1/pipelines/${p}/metrics`, Object.assign({ target: state.target }, base));
      loaded.metrics = m;
      renderKpis(m);
      renderFunnel(m);
      renderTimeInStage(m, definition);
      renderCoverage(m);
      const tasks = [
        optional(`/v1/pipelines/${p}/board`, "/v1/pipelines/{pipeline_id}/board", Object.assign({ limit: 8 }, base), renderBoard).then((d) => { loaded.board = d; }),
        optional(`/v1/pipelines/${p}/metrics/breakdown`, "/v1/pipelines/{pipeline_id}/metrics/breakdown", Object.assign({ by: "industry" }, base),
          (d) => renderBreakdown($("by-industry"), d, "industry", m.currency)).then((d) => { loaded.industry = d; }),
        optional(`/v1/pipelines/${p}/metrics/breakdown`, "/v1/pipelines/{pipeline_id}/metrics/breakdown", Object.assign({ by: "lead_source" }, base),
          (d) => renderBreakdown($("by-lead-source"), d, "lead_source", m.currency)).then((d) => { loaded.lead_source = d; }),
        optional(`/v1/pipelines/${p}/forecast`, "/v1/pipelines/{pipeline_id}/forecast",
          Object.assign(forecastMonths(), state.target ? { target: (Number(state.target) / 12).toFixed(2) } : {}, base), renderForecast).then((d) => { loaded.forecast = d; }),
        optional("/v1/deals", "/v1/deals", Object.assign({ pipeline_id: state.pipeline, sort: "score", limit: 10 }, base), renderScored).then((d) => { loaded.scored = d; }),
        optional("/v1/deals", "/v1/deals", Object.assign({ pipeline_id: state.pipeline, stale: "true", limit: 15 }, base), (d) => renderStale(d, m)).then((d) => { loaded.stale = d; }),
      ];
      const results = await Promise.allSettled(tasks);
      const failed = results.filter((r) => r.status === "rejected");
      if (failed.length) message("Some panels could not load: " + failed.map((f) => f.reason.message).join("; "), "error");
      $("footer").textContent = `read-only · figures from the dealflow API at log position ${DF.fmtInt(m.position)} · ${m.as_of}`;
      // A read model stuck on an event it cannot process must not look like a quiet day.
      const health = await api("/v1/projections").catch(() => null);
      const stuck = health ? health.projections.filter((p) => p.failing) : [];
      if (stuck.length) {
        message(stuck.map((p) => `Read model '${p.name}' is stuck at position ${DF.fmtInt(p.position)} ` +
          `(${DF.fmtInt(p.lag)} events behind, failing for ${Math.round(p.failing_for_s)} s): ${p.last_error}. ` +
          "These figures are stale.").join(" "), "error");
      }
      window.dealflowDashboard = loaded;
      setStatus("ready");
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        $("token-panel").classList.remove("hidden");
        message(error.status === 401 ? "That token is not accepted: paste another one above." : "This token lacks the read scope.", "error");
        setStatus("needs-token");
      } else {
        message(error.status === 404 ? `Pipeline '${state.pipeline}' does not exist.` : "Could not load: " + error.message, "error");
        setStatus("error");
      }
    }
  }

  load();
})();
