// Buying credits: the amount and what it buys, the saved card or a new one typed into Stripe.js's
// fields ("pay and save this card"), 3-D Secure, and following the top-up until it settles.

import { api, wsPath, newKey } from "./api.js";
import { loadDocuments } from "./documents.js";
import { $, setError, show } from "./dom.js";
import { cardName, cardNodes, checkAmount, credits, creditsInWords, fixedPlain, money, toMicros, MICROS } from "./format.js";
import { STRIPE_KEY, state } from "./state.js";
import { refreshSummary } from "./summary.js";
import { loadTransactions } from "./transactions.js";

const POLL_LIMIT_MS = 120000;
// How long the page follows a new card's top-up that Stripe.js reported failed, until the API
// settles it (the webhook), before it shows the summary as the API has it then.
const SETTLE_LIMIT_MS = 30000;

/** The buy form from the summary: the bounds, the saved card, whether a new card can be typed. */
export function renderBuy(s) {
  const min = s.topup_min, max = s.topup_max;
  $("buy-amount-hint").textContent = min && max ? `Between ${money(min)} and ${money(max)}.` : "";
  renderBuyPreview();
  const saved = s.payment_method;
  show($("buy-saved-option"), Boolean(saved));
  if (saved) $("buy-saved-label").replaceChildren(...cardNodes(saved));
  const cardsPossible = Boolean(STRIPE_KEY && window.Stripe);
  $("buy-use-new").disabled = !cardsPossible;
  show($("cards-unavailable"), !cardsPossible);
  if (!$("buy-use-saved").checked && !$("buy-use-new").checked) {
    if (saved) $("buy-use-saved").checked = true;
    else if (cardsPossible) $("buy-use-new").checked = true;
  }
  if (!saved && $("buy-use-saved").checked) $("buy-use-new").checked = cardsPossible;
  syncCardBox();
}

/** What the amount typed buys, converted as the ledger converts it (R1): the amount divided by
 *  the credit price, rounded down to the micro-credit. The exact credits go in `data-credits`. */
function renderBuyPreview() {
  const el = $("buy-preview");
  const s = state.summary;
  const price = s ? toMicros(s.credit_price) : null;
  delete el.dataset.credits;
  if (!price || price <= 0n) {
    el.textContent = "";
    return;
  }
  const perCredit = money(s.credit_price, s.currency, { exact: true });
  const micros = toMicros($("buy-amount").value.replace(/,/g, ""));
  if (micros === null || micros <= 0n || micros % 10000n !== 0n) {
    el.textContent = `One credit costs ${perCredit}.`;
    return;
  }
  const bought = (micros * MICROS) / price;
  el.textContent = `${money(fixedPlain(micros))} buys ${creditsInWords(bought)} credits at ${perCredit} per credit.`;
  el.dataset.credits = fixedPlain(bought);
}

/** Stripe.js, once a publishable key and the script are there. */
function stripeJs() {
  if (!state.stripe && STRIPE_KEY && window.Stripe) state.stripe = window.Stripe(STRIPE_KEY);
  return state.stripe;
}

function syncCardBox() {
  const wantsNew = $("buy-use-new").checked;
  show($("card-box"), wantsNew);
  if (wantsNew && !state.card && stripeJs()) {
    state.card = stripeJs().elements().create("card");
    state.card.mount("#card-element");
    // Stripe.js reports each change as {empty, complete, error}; localstripe's stand-in reports
    // none, so any change there counts as complete and Stripe's own check decides.
    state.card.on("change", (change) => {
      state.cardChange = change || { complete: true };
      setError($("card-error"), change?.error?.message || "");
    });
    // Stand-in and real Stripe.js both build the card fields; label the plain ones they make.
    for (const input of $("card-element").querySelectorAll("input")) {
      if (!input.getAttribute("aria-label")) input.setAttribute("aria-label", input.getAttribute("placeholder") || "Card field");
    }
  }
}

/** Buys credits with the saved card ("saved": charged at once, off-session) or with the card
 *  typed into Stripe.js's fields ("new": Stripe's "pay and save this card", where the card
 *  becomes the saved one only once this payment succeeds, so a declined card never replaces a
 *  working one). The balance on screen changes only once the API reports the payment
 *  succeeded. */
async function buy(amount, card) {
  const status = $("buy-status");
  const stop = async (message) => {
    status.textContent = "";
    setError($("buy-error"), message);
    await refreshSummary().catch(() => {});
  };
  status.textContent = `Charging ${money(amount)}…`;
  let topup;
  try {
    topup = await api("POST", wsPath("/topups"), { amount, card }, { idempotencyKey: newKey() });
  } catch (error) {
    if (error.code === "authentication_required" && error.details.client_secret && stripeJs()) {
      status.textContent = "Your bank asks you to confirm this payment…";
      await refreshSummary().catch(() => {});
      const result = await stripeJs().confirmCardPayment(error.details.client_secret);
      if (result.error) return stop(result.error.message || "The payment was not confirmed.");
      topup = { id: error.details.topup_id, status: "pending" };
    } else {
      return stop(error.message);
    }
  }
  if (card === "new" && topup.status === "pending" && topup.client_secret) {
    // Stripe.js charges the typed card (and runs 3-D Secure if the bank asks for it).
    const result = await stripeJs().confirmCardPayment(topup.client_secret, { payment_method: { card: state.card } });
    if (result.error) {
      const kept = state.summary.payment_method;
      status.textContent = "";
      setError($("buy-error"), `${result.error.message || "The card was not charged."}${kept ? ` Your saved card, ${cardName(kept)}, stays on file.` : ""}`);
      // The top-up stays pending until Stripe's webhook settles it failed: the summary is read
      // again once it has, so that it is not listed as waiting for a card that was refused.
      waitForPayment(topup.id, SETTLE_LIMIT_MS).then(() => refreshSummary().catch(() => {}));
      return;
    }
  }
  if (topup.status === "pending") {
    await refreshSummary();
    status.textContent = "Payment processing… your credits appear as soon as the card payment succeeds.";
    topup = await waitForPayment(topup.id);
  }
  if (topup.status === "succeeded") {
    await refreshSummary();
    status.textContent = `Payment succeeded: ${credits(topup.credits)} credits added to your wallet.`;
    $("buy-amount").value = "";
    renderBuyPreview();
    if (card === "new") forgetTypedCard();
    loadTransactions(true);
    loadDocuments();
  } else if (topup.status === "failed") {
    await stop(topup.failure_message || "The payment failed.");
  } else {
    status.textContent = "The payment is still processing. Your credits will appear once it succeeds; you can leave this page.";
  }
}

/** After a new card paid, it is the saved card: the next top-up uses it, the fields are cleared. */
function forgetTypedCard() {
  state.card?.clear?.();
  state.cardChange = null;
  if (state.summary.payment_method) {
    $("buy-use-saved").checked = true;
    syncCardBox();
  }
}

/** Reads top-up `id` until it is no longer pending, for at most `limitMs`; answers it. */
async function waitForPayment(id, limitMs = POLL_LIMIT_MS) {
  const started = Date.now();
  let delay = 500;
  let topup = { id, status: "pending" };
  while (Date.now() - started < limitMs) {
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 1.5, 5000);
    try {
      topup = await api("GET", wsPath(`/topups/${encodeURIComponent(id)}`));
    } catch {
      continue;
    }
    if (topup.status !== "pending") return topup;
  }
  return topup;
}

/** Wires the buy form: the amount as it is typed, the choice of card, the submission. */
export function wireBuy() {
  $("buy-amount").addEventListener("input", () => {
    // A refusal of the previous amount no longer applies to the one being typed.
    setError($("buy-amount-error"), "", $("buy-amount"));
    renderBuyPreview();
  });
  $("buy-use-new").addEventListener("change", syncCardBox);
  $("buy-use-saved").addEventListener("change", syncCardBox);
  $("buy-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const s = state.summary;
    const micros = checkAmount($("buy-amount"), $("buy-amount-error"), { min: s.topup_min, max: s.topup_max });
    setError($("buy-error"), "");
    setError($("card-error"), "");
    if (micros === null) {
      $("buy-amount").focus();
      return;
    }
    const card = $("buy-use-new").checked ? "new" : "saved";
    // An incomplete card is refused here: the top-up would otherwise be created for nothing.
    if (card === "new" && !state.cardChange?.complete) {
      setError($("card-error"), state.cardChange?.error?.message || "Enter the card's number, expiry date and security code.");
      return;
    }
    const button = $("buy-submit");
    button.disabled = true;
    try {
      await buy(fixedPlain(micros), card);
    } finally {
      button.disabled = false;
    }
  });
}
