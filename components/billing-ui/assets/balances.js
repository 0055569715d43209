// Balances: plan credits (used, included, renewal, a pending change), the wallet (credits,
// value, holds, the saved card, payments waiting for the card), the runway, and the credit grants
// (docs/grants.md: each one's credits left, scope, start and expiry).

import { api, newKey, wsPath } from "./api.js";
import { $, h, setError, show } from "./dom.js";
import { cardNodes, credits, date, fixedPlain, kindsInWords, money, setAmount, toMicros } from "./format.js";
import { planName, renderPlans } from "./plans.js";
import { refreshSummary } from "./summary.js";

/** Plan credits and the wallet, from the summary. */
export function renderBalances(s) {
  for (const el of document.querySelectorAll(".currency-code")) el.textContent = s.currency;
  setAmount($("plan-remaining"), s.plan_credits_remaining);
  setAmount($("plan-included"), s.plan_credits_included);
  const included = toMicros(s.plan_credits_included) || 0n;
  const remaining = toMicros(s.plan_credits_remaining) || 0n;
  const used = included > remaining ? included - remaining : 0n;
  setAmount($("plan-used"), fixedPlain(used));
  const percent = included > 0n ? Number((remaining * 1000n) / included) / 10 : 0;
  // CSSOM, not a style attribute: the page's policy allows no inline styles.
  $("plan-meter-bar").style.width = `${Math.max(0, Math.min(100, percent))}%`;
  $("plan-name").textContent = s.plan ? s.plan.name : "No plan yet";
  $("plan-renewal").textContent = s.next_renewal_at ? date(s.next_renewal_at) : "—";
  const pending = s.pending_plan_change;
  show($("pending-change"), Boolean(pending));
  if (pending) {
    const name = planName(pending.plan_id);
    $("pending-change-text").textContent = `Changes to ${name} on ${date(pending.effective_at)}. Until then your current plan and its credits stay.`;
  }
  setAmount($("wallet-balance"), s.wallet_balance);
  setAmount($("wallet-value"), s.wallet_value, (v) => money(v));
  setAmount($("wallet-held"), s.held);
  const card = s.payment_method;
  $("wallet-card").replaceChildren(...(card ? cardNodes(card) : ["No card saved"]));
  $("wallet-card").dataset.last4 = card ? card.last4 : "";
  const list = $("pending-topups");
  list.replaceChildren(
    ...s.pending_topups.map((p) =>
      h("li", {}, `${p.kind === "auto_recharge" ? "Auto-recharge" : "Top-up"} of ${money(p.amount)} (${credits(p.credits)} credits): waiting for the card payment`),
    ),
  );
  renderRunway(s);
  renderGrants(s);
}

/** Within this many days, an expiry is said as days left ("Expires in 3 days"); later, as its
 *  date (the design's G8). */
const EXPIRY_IN_DAYS_MAX = 30;

/** The credit grants with something left, in the order they are spent, and their total in
 *  force; no card at all when there are none. */
function renderGrants(s) {
  const grants = s.grants || [];
  show($("grants"), grants.length > 0);
  setAmount($("grants-total"), s.grant_credits_remaining);
  $("grant-list").replaceChildren(...grants.map(grantItem));
}

/** One grant: its name and category, credits left of its amount, then what limits it. */
function grantItem(g) {
  const category = g.category === "paid" ? "Paid" : "Promotional";
  const notes = [scopeText(g.scope), g.status === "scheduled" ? `Starts ${date(g.effective_at)}` : null];
  const held = toMicros(g.held) || 0n;
  return h(
    "li",
    { class: "grant", "data-grant": g.id, "data-status": g.status },
    h("h4", {}, h("span", { class: "grant-name" }, g.name), " ", h("span", { class: "badge" }, category)),
    h(
      "p",
      { class: "grant-left" },
      h("span", { class: "amount grant-remaining", "data-value": g.remaining }, credits(g.remaining)),
      " ",
      h("span", { class: "unit" }, "of ", h("span", { class: "amount grant-amount", "data-value": g.amount }, credits(g.amount)), " credits left"),
    ),
    ...notes.filter(Boolean).map((text) => h("p", { class: "grant-note" }, text)),
    h("p", { class: expiresSoon(g) ? "grant-note grant-expiry soon" : "grant-note grant-expiry" }, expiryNodes(g)),
    held > 0n ? h("p", { class: "grant-note grant-held" }, `${credits(g.held)} reserved by calls in progress`) : null,
  );
}

/** What a scoped grant pays for: "Calls and AI tasks only", "Agent support-bot only". */
function scopeText(scope) {
  const kinds = scope?.kinds?.length ? kindsInWords(scope.kinds) : null;
  const agent = scope?.agent_id ? `agent ${scope.agent_id}` : null;
  if (!kinds && !agent) return null;
  const text = kinds && agent ? `${kinds} of ${agent} only` : `${kinds || agent} only`;
  return text[0].toUpperCase() + text.slice(1);
}

const expiresSoon = (g) => g.expires_in_days !== null && g.expires_in_days <= EXPIRY_IN_DAYS_MAX;

/** "Expires in 3 days" when it expires soon (days rounded up: "in 1 day" is its last day), else
 *  "Expires Jun 30, 2027"; "Never expires" without an expiry. */
function expiryNodes(g) {
  if (!g.expires_at) return "Never expires";
  const days = g.expires_in_days;
  const when = expiresSoon(g) ? `in ${days} day${days === 1 ? "" : "s"}` : date(g.expires_at);
  return ["Expires ", h("time", { datetime: g.expires_at }, when)];
}

function renderRunway(s) {
  const r = s.runway;
  const el = $("runway-text");
  if (!r) {
    el.textContent = "";
    return;
  }
  if (r.status === "forecast") {
    el.textContent = `At your usage of the last 7 days (${credits(r.average_daily_spend_7d)} credits a day), your credits last about ${r.days_left} days, until ${date(r.runs_out_at)}.`;
  } else if (r.status === "beyond_horizon") {
    el.textContent = "At your recent usage, your credits last more than a year.";
  } else if (r.status === "no_usage") {
    el.textContent = "No usage in the last 30 days.";
  } else {
    el.textContent = "A forecast appears after the first day of usage.";
  }
}

/** Wires "Cancel change" of a pending plan change. */
export function wireBalances() {
  $("pending-change-cancel").addEventListener("click", async () => {
    const button = $("pending-change-cancel");
    button.disabled = true;
    setError($("pending-change-error"), "");
    try {
      await api("DELETE", wsPath("/subscription/pending-change"), undefined, { idempotencyKey: newKey() });
      await refreshSummary();
      renderPlans();
    } catch (error) {
      setError($("pending-change-error"), error.message);
    } finally {
      button.disabled = false;
    }
  });
}
