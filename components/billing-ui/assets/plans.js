// Plans: the catalog's plans, the preview of a change (prorated credits of an upgrade, the date a
// downgrade starts) and the change itself.

import { api, newKey, wsPath } from "./api.js";
import { $, h, setError, show } from "./dom.js";
import { credits, date, money, toMicros } from "./format.js";
import { state } from "./state.js";
import { refreshSummary, renderSummary } from "./summary.js";
import { loadTransactions } from "./transactions.js";

/** A plan's name from the catalog, or its id while the catalog is not loaded. */
export function planName(id) {
  return state.plans?.find((p) => p.id === id)?.name || id;
}

/** Loads the catalog's plans and shows them. */
export async function loadPlans() {
  try {
    const plans = await api("GET", "/v1/plans");
    state.plans = plans.data;
    renderPlans();
    if (state.summary?.pending_plan_change) renderSummary(state.summary);
  } catch (error) {
    setError($("plans-error"), error.message);
  }
}

/** Each plan with what choosing it would be: upgrade, downgrade or choose. */
export function renderPlans() {
  const s = state.summary;
  const current = s.plan?.id;
  const pending = s.pending_plan_change?.plan_id;
  $("plan-list").replaceChildren(
    ...state.plans.map((plan) => {
      const isCurrent = plan.id === current;
      const label = isCurrent ? null : !current ? "Choose" : rank(plan) > rank(planOf(current)) ? "Upgrade" : "Downgrade";
      return h(
        "li",
        { class: "plan" + (isCurrent ? " current" : ""), "data-plan": plan.id },
        h("h3", {}, plan.name),
        // "Free" is already the free plan's name: its price reads as one, "$0.00 / month".
        h("p", { class: "price" }, `${money(plan.price)} / month`),
        h("p", {}, `${credits(plan.monthly_credits)} credits every month`),
        plan.rollover_max_credits ? h("p", { class: "hint" }, `Unused credits roll over, up to ${credits(plan.rollover_max_credits)}.`) : null,
        isCurrent ? h("p", { class: "badge" }, "Current plan") : null,
        plan.id === pending ? h("p", { class: "badge" }, "Starts next cycle") : null,
        label && plan.id !== pending
          ? h("button", { type: "button", class: label === "Downgrade" ? "secondary" : "", onclick: () => previewPlan(plan) }, `${label} to ${plan.name}`)
          : null,
      );
    }),
  );
}

function planOf(id) {
  return state.plans.find((p) => p.id === id) || { price: "0", monthly_credits: "0" };
}

function rank(plan) {
  return (toMicros(plan.price) || 0n) * 1000000000000n + (toMicros(plan.monthly_credits) || 0n);
}

async function previewPlan(plan) {
  setError($("plans-error"), "");
  $("plans-status").textContent = "";
  let preview;
  try {
    preview = await api("GET", wsPath(`/subscription/preview?plan_id=${encodeURIComponent(plan.id)}`));
  } catch (error) {
    setError($("plans-error"), error.message);
    return;
  }
  const text = {
    subscribe: `Start ${plan.name} now: ${credits(preview.credits_granted)} credits${preview.awaiting_payment ? " once the first payment succeeds" : " now"}, then every month.`,
    upgrade: `Upgrade to ${plan.name} now: you keep your unused credits and get ${credits(preview.credits_granted)} prorated credits for the rest of this cycle${preview.awaiting_payment ? " once the payment succeeds" : ""}.${toMicros(preview.price) > 0n ? ` The plan costs ${money(preview.price)} a month.` : ""}`,
    downgrade: `Downgrade to ${plan.name} on ${date(preview.effective_at)}. Until then you keep your current plan and its credits.`,
    unchanged: `You are already on ${plan.name}.`,
  }[preview.change];
  $("plan-confirm-text").textContent = text;
  $("plan-confirm-text").dataset.credits = preview.credits_granted;
  $("plan-confirm-text").dataset.change = preview.change;
  show($("plan-confirm"), true);
  $("plan-confirm-yes").textContent = preview.change === "downgrade" ? `Downgrade at period end` : `Confirm ${preview.change === "upgrade" ? "upgrade" : "plan"}`;
  $("plan-confirm-yes").onclick = () => changePlan(plan);
  $("plan-confirm-yes").focus();
}

async function changePlan(plan) {
  $("plan-confirm-yes").disabled = true;
  try {
    const result = await api("POST", wsPath("/subscription"), { plan_id: plan.id }, { idempotencyKey: newKey() });
    show($("plan-confirm"), false);
    await refreshSummary();
    renderPlans();
    $("plans-status").textContent =
      result.action === "downgrade_scheduled"
        ? `${plan.name} starts on ${date(result.effective_at)}.`
        : `You are now on ${plan.name}. ${credits(result.credits_granted)} credits added.`;
    loadTransactions(true);
  } catch (error) {
    setError($("plans-error"), error.message);
  } finally {
    $("plan-confirm-yes").disabled = false;
  }
}

/** Wires the confirmation's "Cancel". */
export function wirePlans() {
  $("plan-confirm-no").addEventListener("click", () => show($("plan-confirm"), false));
}
