// Agents: each agent's overage policy and limits against its use, edited in place.

import { api, newKey, wsPath } from "./api.js";
import { $, h, setError, show } from "./dom.js";
import { credits, toMicros } from "./format.js";

/** Loads every agent (pages of 500, at most 5,000) and lists them. */
export async function loadAgents() {
  setError($("agents-error"), "");
  let agents = [];
  try {
    let cursor = null;
    do {
      const page = await api("GET", wsPath(`/agents?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`));
      agents = agents.concat(page.agents);
      cursor = page.next_cursor;
    } while (cursor && agents.length < 5000);
  } catch (error) {
    setError($("agents-error"), error.message);
    return;
  }
  show($("agents-empty"), agents.length === 0);
  $("agent-table").querySelector("tbody").replaceChildren(...agents.map(agentRow));
}

const of = (limit, text) => (limit === null || limit === undefined ? `${text} (no limit)` : `${text} of ${limit}`);

function agentRow(agent) {
  const row = h(
    "tr",
    { "data-agent": agent.agent_id },
    h("th", { scope: "row" }, agent.agent_id),
    // data-label names each cell where a phone's width stacks the row (app.css).
    h("td", { "data-label": "When plan credits run out" }, agent.overage_policy === "stop" ? "Stop" : "Continue on the wallet"),
    h("td", { class: "num", "data-label": "Spent this cycle" }, of(agent.monthly_spend_limit === null ? null : credits(agent.monthly_spend_limit), credits(agent.cycle_spend))),
    h("td", { class: "num", "data-label": "Calls today" }, of(agent.daily_call_limit, String(agent.calls_today))),
    h("td", { class: "num", "data-label": "Calls in progress" }, of(agent.max_concurrent_calls, String(agent.calls_in_progress))),
    h("td", {}, h("button", { type: "button", class: "secondary", "aria-label": `Edit limits of ${agent.agent_id}`, onclick: () => editAgent(row, agent) }, "Edit")),
  );
  return row;
}

function editAgent(row, agent) {
  const id = (name) => `agent-${name}-${agent.agent_id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const field = (name, label, value, hint) =>
    h("div", {}, h("label", { for: id(name) }, label), h("input", { id: id(name), inputmode: "numeric", value: value ?? "", placeholder: hint, autocomplete: "off" }));
  const policy = h(
    "select",
    { id: id("policy") },
    h("option", { value: "use_balance", selected: agent.overage_policy !== "stop" }, "Continue on the wallet"),
    h("option", { value: "stop", selected: agent.overage_policy === "stop" }, "Stop"),
  );
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "agent-form", novalidate: true },
    h("div", {}, h("label", { for: id("policy") }, "When plan credits run out"), policy),
    field("spend", "Monthly spending limit (credits)", agent.monthly_spend_limit, "No limit"),
    field("daily", "Calls per day", agent.daily_call_limit, "No limit"),
    field("concurrent", "Calls at once", agent.max_concurrent_calls, "No limit"),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save limits"), h("button", { type: "button", class: "secondary", onclick: () => editor.replaceWith(agentRow(agent)) }, "Cancel")),
    error,
  );
  const editor = h("tr", { class: "editing", "data-agent": agent.agent_id }, h("td", { colspan: 6 }, h("p", { class: "editing-title" }, `Limits of ${agent.agent_id}`), form));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (name) => form.querySelector("#" + id(name)).value.trim();
    const body = { overage_policy: policy.value };
    const wholes = { daily: "daily_call_limit", concurrent: "max_concurrent_calls" };
    for (const [name, key] of Object.entries(wholes)) {
      if (value(name) === "") continue;
      if (!/^\d{1,9}$/.test(value(name))) {
        setError(error, "Calls per day and calls at once are whole numbers; leave empty for no limit.", form.querySelector("#" + id(name)));
        return;
      }
      body[key] = Number(value(name));
    }
    if (value("spend") !== "") {
      if (toMicros(value("spend")) === null) {
        setError(error, "The monthly spending limit is a number of credits, such as 500; leave empty for no limit.", form.querySelector("#" + id("spend")));
        return;
      }
      body.monthly_spend_limit = value("spend");
    }
    try {
      await api("PUT", wsPath(`/agents/${encodeURIComponent(agent.agent_id)}/limits`), body, { idempotencyKey: newKey() });
      await loadAgents();
      $("agents").querySelector(`tr[data-agent="${CSS.escape(agent.agent_id)}"] button`)?.focus();
    } catch (e) {
      setError(error, e.message);
    }
  });
  row.replaceWith(editor);
  policy.focus();
}
