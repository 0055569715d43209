// Auto-recharge: the switch, the threshold and the amount, its warnings, and the runway's
// suggested setting.

import { api, newKey, wsPath } from "./api.js";
import { $, setError, show } from "./dom.js";
import { checkAmount, fixedPlain, money, toMicros } from "./format.js";
import { state } from "./state.js";
import { refreshSummary } from "./summary.js";

/** The auto-recharge settings from the summary (unless the user is editing them), and the runway's suggestion. */
export function renderAutoRecharge(s) {
  const ar = s.auto_recharge;
  const form = $("ar-form");
  if (!form.dataset.dirty) {
    $("ar-enabled").checked = ar.enabled;
    $("ar-threshold").value = toMicros(ar.threshold) ? ar.threshold : "";
    $("ar-amount").value = toMicros(ar.amount) ? ar.amount : "";
  }
  $("ar-enabled").setAttribute("aria-checked", String($("ar-enabled").checked));
  show($("ar-warning"), Boolean(ar.warning));
  $("ar-warning").textContent = ar.warning || "";
  const suggestion = s.runway?.suggested_auto_recharge;
  show($("ar-suggestion"), Boolean(suggestion));
  if (suggestion) {
    $("ar-suggestion-text").textContent = `Suggested from your usage: recharge ${money(suggestion.amount)} when the wallet falls below ${money(suggestion.threshold)} (about two weeks of calls).`;
    $("ar-use-suggestion").onclick = () => {
      $("ar-threshold").value = suggestion.threshold;
      $("ar-amount").value = suggestion.amount;
      form.dataset.dirty = "1";
      $("ar-threshold").focus();
    };
  }
}

/** Wires the auto-recharge form. */
export function wireAutoRecharge() {
  $("ar-form").addEventListener("input", () => ($("ar-form").dataset.dirty = "1"));
  $("ar-enabled").addEventListener("change", () => $("ar-enabled").setAttribute("aria-checked", String($("ar-enabled").checked)));
  $("ar-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const s = state.summary;
    const enabled = $("ar-enabled").checked;
    setError($("ar-error"), "");
    $("ar-status").textContent = "";
    const threshold = checkAmount($("ar-threshold"), $("ar-threshold-error"), { allowZero: !enabled });
    const amount = checkAmount($("ar-amount"), $("ar-amount-error"), enabled ? { min: s.topup_min, max: s.topup_max } : { allowZero: true });
    if (threshold === null || amount === null) return;
    $("ar-save").disabled = true;
    try {
      await api(
        "PUT",
        wsPath("/auto-recharge"),
        // The page does not edit the monthly cap (docs/billing-rules.md, R11): it keeps the one set.
        { enabled, threshold: fixedPlain(threshold), amount: fixedPlain(amount), max_per_month: s.auto_recharge.max_per_month ?? null },
        { idempotencyKey: newKey() },
      );
      delete $("ar-form").dataset.dirty;
      await refreshSummary();
      $("ar-status").textContent = enabled ? "Auto-recharge is on." : "Auto-recharge is off.";
    } catch (error) {
      const target = error.code === "payment_method_required" ? $("ar-error") : error.details.field === "threshold" ? $("ar-threshold-error") : error.details.field === "amount" ? $("ar-amount-error") : $("ar-error");
      setError(target, error.message);
    } finally {
      $("ar-save").disabled = false;
    }
  });
}
