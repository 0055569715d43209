// The bar over the page: the contract's status message, and a button that fixes its cause.

import { $, show } from "./dom.js";
import { openPortal } from "./documents.js";

const BANNER_ACTIONS = {
  billing_not_configured: ["Choose a plan", "plans"],
  no_payment_method: ["Add a card", "buy"],
  low_balance: ["Buy credits", "buy"],
  balance_exhausted: ["Buy credits", "buy"],
  grace_period: ["Buy credits", "buy"],
  past_due: ["Update payment details", "portal"],
};
const RED = new Set(["balance_exhausted", "grace_period", "past_due"]);

/** Shows the bar for the summary's status, or hides it when the status is ok. */
export function renderBanner(summary) {
  const banner = $("banner");
  const status = summary.status;
  banner.dataset.status = status;
  if (status === "ok") {
    show(banner, false);
    return;
  }
  banner.className = "banner " + (RED.has(status) ? "banner-red" : "banner-amber");
  banner.setAttribute("role", RED.has(status) ? "alert" : "status");
  $("banner-message").textContent = summary.message;
  const action = $("banner-action");
  const manager = "currency" in summary;
  const [label, target] = BANNER_ACTIONS[status] || [];
  show(action, Boolean(label && manager));
  if (label) {
    action.textContent = label;
    action.onclick = () => {
      if (target === "portal") openPortal();
      else {
        $(target).scrollIntoView({ behavior: "smooth", block: "start" });
        const focus = target === "buy" ? $("buy-amount") : $(target).querySelector("button");
        focus?.focus({ preventScroll: true });
      }
    };
  }
  show(banner, true);
}
