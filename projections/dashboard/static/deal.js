/* The deal page: the deal's state and its audit timeline (GET /v1/deals/{id}/timeline, or the
   plain history when the timeline endpoint is not there). */
"use strict";

(() => {
  const { h, figure, api, hasPath } = DF;
  const $ = (id) => document.getElementById(id);
  const dealId = decodeURIComponent(window.location.pathname.replace(/^\/deals\//, "").replace(/\/$/, ""));

  function setStatus(value) { document.body.dataset.state = value; }
  function message(text, kind) {
    const box = $("message");
    box.className = "notice" + (kind ? " " + kind : "");
    box.textContent = text;
  }

  function renderDeal(d) {
    const facts = Object.entries(d.facts || {});
    const fields = [
      ["deal id", d.deal_id], ["pipeline", `${d.pipeline_id} (v${d.pipeline_version ?? "?"})`], ["stage", d.stage],
      ["status", h("span", { class: "badge " + d.status }, d.status)],
      ["amount", figure("span", "deal.amount", d.amount, DF.fmtMoney(d.amount, d.currency))],
      ["owner", d.owner || "–"], ["account", d.account || "–"], ["industry", d.industry || "–"],
      ["lead source", d.lead_source || "–"], ["decision maker", d.decision_maker_role || "–"],
      ["opened", DF.fmtTime(d.opened_at)], ["in stage since", DF.fmtTime(d.stage_entered_at)],
      ["closed", DF.fmtTime(d.closed_at)], ["lost reason", d.lost_reason || "–"],
      ["stale", d.stale ? h("span", { class: "badge stale" }, "stale") : "no"], ["version", String(d.version)],
    ];
    const attributes = Object.entries(d.attributes || {});
    DF.fill($("deal"), 
      h("h3", {}, d.name),
      h("dl", { class: "fields" }, ...fields.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
      h("h3", { class: "small" }, "Facts"),
      facts.length
        ? h("div", { class: "chips" }, ...facts.map(([k, v]) => h("span", { class: "chip " + (v ? "held" : "unmet") }, (v ? "✓ " : "✗ ") + k)))
        : h("p", { class: "muted small" }, "none"),
      attributes.length ? h("h3", { class: "small" }, "Attributes") : null,
      attributes.length ? h("dl", { class: "fields" }, ...attributes.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "object" ? JSON.stringify(v) : String(v))])) : null
    );
    $("deal-title").textContent = `${d.name} · ${d.stage} · ${d.status}`;
    document.title = `dealflow · ${d.name}`;
    $("home-link").href = "/?pipeline=" + encodeURIComponent(d.pipeline_id);
  }

  function describe(e) {
    const d = e.data || {};
    switch (e.type) {
      case "opened": return `opened in ${d.stage}${d.amount ? " · " + DF.fmtMoney(d.amount, d.currency) : ""}${d.owner ? " · owner " + d.owner : ""}`;
      case "fact_recorded": return `${d.fact} = ${d.value}${d.note ? " — " + d.note : ""}`;
      case "updated": return "changed " + Object.keys(d.changes || {}).join(", ");
      case "activity_logged": return `${d.activity}${d.summary ? " — " + d.summary : ""}`;
      case "stage_changed": return `${d.from_stage} → ${d.to_stage} (${d.direction})`;
      case "won": return `won from ${d.from_stage}${d.amount ? " · " + DF.fmtMoney(d.amount) : ""}`;
      case "lost": return `lost from ${d.from_stage}: ${d.reason}`;
      case "reopened": return `reopened (${d.from_status}) into ${d.to_stage}`;
      case "nurture_enrolled": return `enrolled in ${d.sequence_id} v${d.sequence_version}`;
      case "nurture_touch_sent": return `touch ${d.step} of ${d.sequence_id} by ${d.channel}${d.to ? " to " + d.to : ""}${d.subject ? ": " + d.subject : ""}`;
      case "nurture_stopped": return `${d.sequence_id} stopped (${d.reason})`;
      case "escalated": return `escalated to ${d.level}${d.to ? " (" + d.to + ")" : ""} in ${d.stage}`;
      case "flagged_stale": return `flagged stale in ${d.stage}`;
      default: return JSON.stringify(d);
    }
  }

  function renderTimeline(data, source) {
    const events = data.events || [];
    $("timeline-hint").textContent = `${events.length} events` + (source === "history" ? " · from the history (timeline not available)" : "");
    DF.fill($("timeline"), 
      h("ol", { class: "timeline" }, ...events.map((e) => {
        const criteria = e.criteria || (e.data && e.data.criteria) || [];
        const st = e.state || null;
        const automated = (e.actor || "").startsWith("dealflow");
        return h("li", { class: [e.type === "won" ? "won" : "", e.type === "lost" ? "lost" : "", automated ? "automation" : ""].join(" "), "data-version": e.version, "data-type": e.type },
          h("div", { class: "head" },
            h("span", { class: "type" }, `v${e.version} · ${e.type.replace(/_/g, " ")}`),
            h("span", { class: "when", title: "recorded " + DF.fmtTime(e.recorded_at) }, DF.fmtTime(e.occurred_at)),
            h("span", { class: "when" }, "by " + (e.actor || "?"))),
          h("div", { class: "detail" }, describe(e)),
          criteria.length ? h("div", { class: "chips" }, ...criteria.map((c) => h("span", { class: "chip " + (c.held ? "held" : "unmet"), title: c.stage }, (c.held ? "✓ " : "✗ ") + `${c.stage}.${c.criterion}`))) : null,
          st ? h("div", { class: "detail muted" }, `then: ${st.stage || "?"} · ${st.status || "?"}` + (st.amount !== undefined && st.amount !== null ? " · " + DF.fmtMoney(st.amount, st.currency) : "")) : null,
          h("div", { class: "detail muted small" }, `event ${e.event_id}` + (e.pipeline_version ? ` · pipeline v${e.pipeline_version}` : ""))
        );
      }))
    );
  }

  async function loadTimeline() {
    const path = `/v1/deals/${encodeURIComponent(dealId)}`;
    try {
      if (await hasPath("/v1/deals/{deal_id}/timeline")) {
        renderTimeline(await api(path + "/timeline"), "timeline");
      } else if (await hasPath("/v1/deals/{deal_id}/history")) {
        renderTimeline(await api(path + "/history"), "history");
      } else {
        DF.fill($("timeline"), h("p", { class: "muted" }, "No timeline on this server."));
      }
    } catch (error) {
      DF.fill($("timeline"), h("p", { class: "muted" },
        error.status === 403 ? "The audit timeline needs a token with the audit scope." : "Timeline unavailable: " + error.message));
    }
  }

  async function load() {
    setStatus("loading");
    $("change-token").addEventListener("click", () => $("token-panel").classList.toggle("hidden"));
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token-input").value.trim();
      if (value) DF.setToken(value);
    });
    if (!DF.token()) {
      $("token-panel").classList.remove("hidden");
      setStatus("needs-token");
      return;
    }
    try {
      renderDeal(await api(`/v1/deals/${encodeURIComponent(dealId)}`));
    } catch (error) {
      if (error.status === 401 || error.status === 403) $("token-panel").classList.remove("hidden");
      message(error.status === 404 ? `Deal '${dealId}' does not exist.` : "Could not load the deal: " + error.message, "error");
      setStatus("error");
      return;
    }
    await loadTimeline();
    setStatus("ready");
  }

  load();
})();
