// The billing page (docs/billing-page.md). No framework and no build step: the page talks to
// the public HTTP contract with the user's token, which the embedding product hands over by
// postMessage (or the sign-in form when the page is opened on its own). Every amount is a decimal
// string from the API and is shown without going through floating point.

const root = document.documentElement;
const STRIPE_KEY = root.dataset.stripeKey || "";
const EMBED_ORIGINS = (root.dataset.embedOrigins || "").split(/\s+/).filter(Boolean);
const EMBEDDED = window.parent !== window;
const TX_PAGE_SIZE = 25;
const POLL_LIMIT_MS = 120000;
// How long the page follows a new card's top-up that Stripe.js reported failed, until the API
// settles it (the webhook), before it shows the summary as the API has it then.
const SETTLE_LIMIT_MS = 30000;

const state = {
  token: null,
  workspace: null,
  parentOrigin: null,
  summary: null,
  plans: null,
  usageMonth: null,
  tx: { cursors: [null], index: 0, next: null, type: "", agent: "" },
  stripe: null,
  card: null,
  cardChange: null,
  chart: null,
  loadedWorkspace: null,
};

// ---- small helpers ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** Creates an element: `h("td", {class: "num"}, "text", child)`. Text is never parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false || child === "") continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function show(el, visible) {
  el.hidden = !visible;
}

/** Shows `message` in the error slot `el` (and marks `field` invalid), or clears it. */
function setError(el, message, field) {
  el.textContent = message || "";
  show(el, Boolean(message));
  if (field) field.setAttribute("aria-invalid", message ? "true" : "false");
}

const MICROS = 1000000n;

/** A decimal string ("12.5", "-0.000001") in micro-units, or null when it is not one. */
function toMicros(text) {
  const m = /^(-)?(\d{1,15})(?:\.(\d{1,6}))?$/.exec(String(text ?? "").trim());
  if (!m) return null;
  const value = BigInt(m[2]) * MICROS + BigInt((m[3] || "").padEnd(6, "0"));
  return m[1] ? -value : value;
}

/** Micro-units as a decimal string with exactly `digits` decimals (rounded half away from 0). */
function fixed(micros, digits = 2) {
  const negative = micros < 0n;
  let value = negative ? -micros : micros;
  const unit = 10n ** BigInt(6 - digits);
  value = (value + unit / 2n) / unit;
  const text = value.toString().padStart(digits + 1, "0");
  const whole = text.slice(0, text.length - digits).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const fraction = digits ? "." + text.slice(text.length - digits) : "";
  return (negative && value !== 0n ? "−" : "") + whole + fraction;
}

/** A credits amount for display (2 decimals); the exact value stays in `data-value`. */
function credits(text) {
  const micros = toMicros(text);
  return micros === null ? "—" : fixed(micros, 2);
}

/** A rate in credits with every decimal it has, never fewer than two ("0.05", "0.0125"). */
function creditsExact(text) {
  const micros = toMicros(text);
  return micros === null ? "—" : fixed(micros, Math.max(2, decimalsOf(micros)));
}

/** Credits in a sentence: "2,500" rather than "2,500.00", else two decimals. */
function creditsInWords(micros) {
  return fixed(micros, 2).replace(/\.00$/, "");
}

function currencySymbolFormat(currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency });
  } catch {
    return null;
  }
}

/** How many decimals `micros` needs to be shown exactly (0 to 6). */
function decimalsOf(micros) {
  let value = micros < 0n ? -micros : micros;
  let digits = 6;
  while (digits > 0 && value % 10n === 0n) {
    value /= 10n;
    digits -= 1;
  }
  return digits;
}

/** Money in the workspace currency ("$1,234.50"); `exact` shows every decimal a price has
 *  ("$0.0125"), never fewer than two. */
function money(text, currency = state.summary?.currency || "USD", { exact = false } = {}) {
  const micros = toMicros(text);
  if (micros === null) return "—";
  const format = currencySymbolFormat(currency);
  const cents = fixed(micros, exact ? Math.max(2, decimalsOf(micros)) : 2);
  if (!format) return `${cents} ${currency}`;
  // Whole and fraction come from the exact decimal; Intl only supplies the symbol's place.
  const parts = format.formatToParts(micros < 0n ? -1 : 1);
  return parts
    .map((p) => (p.type === "integer" ? cents.replace("−", "").split(".")[0] : p.type === "fraction" ? cents.split(".")[1] : p.type === "minusSign" ? "−" : p.value))
    .join("");
}

/** Writes an amount into `el`: display text plus the API's exact value in `data-value`. */
function setAmount(el, text, format = credits) {
  el.textContent = format(text);
  el.dataset.value = text ?? "";
}

function date(text, withTime = false) {
  if (!text) return "—";
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) return text;
  const options = withTime
    ? { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC" }
    : { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" };
  return d.toLocaleString(undefined, options) + (withTime ? " UTC" : "");
}

function newKey() {
  return crypto.randomUUID();
}

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The request failed (HTTP ${status}).`);
    this.status = status;
    this.code = error.code || "http_" + status;
    this.details = error;
  }
}

/** Calls the contract. Errors carry the contract's code and its plain-words message. */
async function api(method, path, body, { idempotencyKey, accept } = {}) {
  const headers = { authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
  if (accept) headers.accept = accept;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, { error: { code: "network_error", message: "The billing service could not be reached. Check your connection and try again." } });
  }
  if (response.status === 401) tokenExpired();
  if (accept === "text/csv" && response.ok) return response.blob();
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

const wsPath = (rest) => `/v1/workspaces/${encodeURIComponent(state.workspace)}${rest}`;

// ---- the token -------------------------------------------------------------------------------

function claimsOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

function originAllowed(origin) {
  if (origin === window.location.origin) return true;
  return EMBED_ORIGINS.some((allowed) => {
    if (allowed === origin) return true;
    const star = allowed.indexOf("://*.");
    if (star < 0) return false;
    const scheme = allowed.slice(0, star + 3);
    const suffix = allowed.slice(star + 4);
    return origin.startsWith(scheme) && origin.endsWith(suffix) && origin.length > scheme.length + suffix.length;
  });
}

function tell(message) {
  if (EMBEDDED && state.parentOrigin) window.parent.postMessage(message, state.parentOrigin);
}

function tokenExpired() {
  state.loadedWorkspace = null;
  if (EMBEDDED) {
    $("page-status").textContent = "Your session has expired. Signing you in again…";
    tell({ type: "voice-billing:token-expired" });
  } else {
    $("page-status").textContent = "Your session has expired. Paste a new token to go on.";
    show($("signin"), true);
  }
}

function useToken(token) {
  const claims = claimsOf(token);
  if (!claims || typeof claims.workspace_id !== "string") {
    $("page-status").textContent = "The sign-in token could not be read.";
    return;
  }
  state.token = token;
  state.workspace = claims.workspace_id;
  // A fresh token for the page already shown changes nothing on screen; a first token, another
  // workspace, or a token after a load that failed (e.g. it had expired) loads the page.
  if (claims.workspace_id !== state.loadedWorkspace) loadAll();
}

window.addEventListener("message", (event) => {
  if (!EMBEDDED || event.source !== window.parent || !originAllowed(event.origin)) return;
  const data = event.data;
  if (!data || typeof data !== "object") return;
  if (data.type === "voice-billing:token" && typeof data.token === "string") {
    state.parentOrigin = event.origin;
    useToken(data.token);
  } else if (data.type === "voice-billing:theme" && ["light", "dark", "auto"].includes(data.theme)) {
    if (data.theme === "auto") delete root.dataset.theme;
    else root.dataset.theme = data.theme;
  }
});

// The page's height, for the embedding product to size its frame.
new ResizeObserver(() => tell({ type: "voice-billing:height", height: Math.ceil(document.body.getBoundingClientRect().height) })).observe(document.body);

// ---- loading ---------------------------------------------------------------------------------

async function loadAll() {
  $("page-status").textContent = "Loading…";
  let summary;
  try {
    summary = await api("GET", wsPath("/billing"));
  } catch (error) {
    if (error.status !== 401) $("page-status").textContent = error.message;
    return;
  }
  state.loadedWorkspace = state.workspace;
  renderBanner(summary);
  const manager = "currency" in summary;
  show($("member-note"), !manager);
  show($("owner-view"), manager);
  show($("signin"), false);
  if (!manager) {
    $("page-status").textContent = "";
    return;
  }
  renderSummary(summary);
  $("page-status").textContent = "";
  await Promise.all([loadPlans(), loadAgents(), loadUsage(), loadTransactions(), loadDocuments()]);
  stampUpdated();
}

async function refreshSummary() {
  const summary = await api("GET", wsPath("/billing"));
  renderBanner(summary);
  if ("currency" in summary) {
    renderSummary(summary);
    stampUpdated();
  }
  return summary;
}

/** Says when the figures on screen were read ("Updated 14:02"), in the user's own time. */
function stampUpdated() {
  const now = new Date();
  const status = $("page-status");
  status.textContent = `Updated ${now.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })}`;
  status.dataset.updatedAt = now.toISOString();
}

// ---- banner ----------------------------------------------------------------------------------

const BANNER_ACTIONS = {
  billing_not_configured: ["Choose a plan", "plans"],
  no_payment_method: ["Add a card", "buy"],
  low_balance: ["Buy credits", "buy"],
  balance_exhausted: ["Buy credits", "buy"],
  grace_period: ["Buy credits", "buy"],
  past_due: ["Update payment details", "portal"],
};
const RED = new Set(["balance_exhausted", "grace_period", "past_due"]);

function renderBanner(summary) {
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

// ---- balances --------------------------------------------------------------------------------

function renderSummary(s) {
  state.summary = s;
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
  renderBuy(s);
  renderAutoRecharge(s);
}

/** Micro-units back to the API's decimal form. */
function fixedPlain(micros) {
  const negative = micros < 0n;
  const value = negative ? -micros : micros;
  const whole = value / MICROS;
  const fraction = (value % MICROS).toString().padStart(6, "0").replace(/0+$/, "");
  return (negative ? "-" : "") + whole + (fraction ? "." + fraction : "");
}

function cardName(card) {
  const brand = card.brand ? card.brand[0].toUpperCase() + card.brand.slice(1) : "Card";
  return `${brand} •••• ${card.last4}`;
}

/** "Visa •••• 4242, expires 12/2030", each half kept on one line. */
function cardNodes(card) {
  const expiry = `expires ${String(card.exp_month).padStart(2, "0")}/${card.exp_year}`;
  return [h("span", { class: "nowrap" }, cardName(card)), ", ", h("span", { class: "nowrap" }, expiry)];
}

function planName(id) {
  return state.plans?.find((p) => p.id === id)?.name || id;
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

// ---- buy credits -----------------------------------------------------------------------------

function renderBuy(s) {
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
$("buy-amount").addEventListener("input", () => {
  // A refusal of the previous amount no longer applies to the one being typed.
  setError($("buy-amount-error"), "", $("buy-amount"));
  renderBuyPreview();
});

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
$("buy-use-new").addEventListener("change", syncCardBox);
$("buy-use-saved").addEventListener("change", syncCardBox);

/** Checks an amount field against optional bounds; returns its micros or shows why not. */
function checkAmount(input, errorEl, { min, max, allowZero = false } = {}) {
  const micros = toMicros(input.value.replace(/,/g, ""));
  let message = "";
  if (input.value.trim() === "") message = "Enter an amount.";
  else if (micros === null || micros < 0n) message = "Enter an amount such as 25 or 25.50.";
  else if (micros % 10000n !== 0n) message = "Use at most two decimals.";
  else if (!allowZero && micros === 0n) message = "Enter an amount above zero.";
  else if (min && micros < toMicros(min)) message = `The minimum is ${money(min)}.`;
  else if (max && micros > toMicros(max)) message = `The maximum is ${money(max)}.`;
  setError(errorEl, message, input);
  return message ? null : micros;
}

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

// ---- auto-recharge ---------------------------------------------------------------------------

function renderAutoRecharge(s) {
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
      { enabled, threshold: fixedPlain(threshold), amount: fixedPlain(amount) },
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

// ---- plans -----------------------------------------------------------------------------------

async function loadPlans() {
  try {
    const plans = await api("GET", "/v1/plans");
    state.plans = plans.data;
    renderPlans();
    if (state.summary?.pending_plan_change) renderSummary(state.summary);
  } catch (error) {
    setError($("plans-error"), error.message);
  }
}

function renderPlans() {
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

$("plan-confirm-no").addEventListener("click", () => show($("plan-confirm"), false));

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

// ---- agents ----------------------------------------------------------------------------------

async function loadAgents() {
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

// ---- usage -----------------------------------------------------------------------------------

function monthOf(d) {
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

function shiftMonth(month, by) {
  const [y, m] = month.split("-").map(Number);
  return monthOf(new Date(Date.UTC(y, m - 1 + by, 1)));
}

/** Loads a month's usage; without `month`, the workspace's current month (its own clock). */
async function loadUsage(month = state.usageMonth) {
  setError($("usage-error"), "");
  let summary;
  try {
    summary = await api("GET", wsPath(month ? `/usage/summary?month=${month}` : "/usage/summary"));
  } catch (error) {
    setError($("usage-error"), error.message);
    return;
  }
  month = summary.month;
  state.usageMonth = month;
  state.currentMonth = state.currentMonth || month;
  const [y, m] = month.split("-").map(Number);
  $("usage-month").textContent = new Date(Date.UTC(y, m - 1, 1)).toLocaleString(undefined, { month: "long", year: "numeric", timeZone: "UTC" });
  $("usage-next").disabled = month >= state.currentMonth;
  setAmount($("usage-total"), summary.total);
  const rows = (list, label) =>
    list.map((r) => h("tr", {}, h("th", { scope: "row" }, label(r.key)), h("td", { class: "num" }, String(r.count)), h("td", { class: "num", "data-value": r.amount }, credits(r.amount))));
  $("usage-by-kind").querySelector("tbody").replaceChildren(...rows(summary.by_kind, kindName));
  $("usage-by-agent").querySelector("tbody").replaceChildren(...rows(summary.by_agent, (k) => k));
  $("usage-by-day")
    .querySelector("tbody")
    .replaceChildren(
      ...summary.by_day.map((d) =>
        h("tr", {}, h("th", { scope: "row" }, d.date), h("td", { class: "num" }, String(d.count)), h("td", { class: "num" }, credits(d.amount)), h("td", {}, d.spike ? "Spike" : "")),
      ),
    );
  renderChart(month, summary);
}

$("usage-prev").addEventListener("click", () => loadUsage(shiftMonth(state.usageMonth, -1)));
$("usage-next").addEventListener("click", () => loadUsage(shiftMonth(state.usageMonth, 1)));

const KINDS = { call: "Calls", message: "Messages", sms: "SMS", stt: "Speech-to-text", ai_task: "AI tasks", topup: "Top-up", auto_recharge: "Auto-recharge", plan_grant: "Plan credits", plan_expiry: "Plan credits expired", refund: "Refund", dispute: "Dispute" };
const kindName = (k) => KINDS[k] || k;
/** One history row's type: one call, one message. */
const ROW_KINDS = { ...KINDS, call: "Call", message: "Message", ai_task: "AI task" };
const rowKindName = (k) => ROW_KINDS[k] || k;

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Credits per day as bars; spikes are marked with a triangle and named in each bar's title.
 *  Drawn at the width it has on screen, one unit a CSS pixel, so that its labels keep their
 *  size at a phone's width (scaled down from a fixed width they would shrink to 7 px). */
function renderChart(month, summary) {
  const measured = Math.floor($("usage-chart").clientWidth);
  state.chart = { month, summary, width: measured };
  const [y, m] = month.split("-").map(Number);
  const days = new Date(Date.UTC(y, m, 0)).getUTCDate();
  const byDate = new Map(summary.by_day.map((d) => [d.date, d]));
  const values = [];
  for (let day = 1; day <= days; day++) {
    const key = `${month}-${String(day).padStart(2, "0")}`;
    const d = byDate.get(key);
    values.push({ key, day, micros: d ? toMicros(d.amount) : 0n, amount: d ? d.amount : "0", spike: Boolean(d?.spike), count: d ? d.count : 0 });
  }
  const max = values.reduce((a, v) => (v.micros > a ? v.micros : a), 0n);
  if (max === 0n) {
    $("usage-chart").replaceChildren(h("p", { class: "muted" }, "No usage this month."));
    return;
  }
  const maxText = credits(fixedPlain(max));
  const width = Math.max(240, measured || 620);
  const height = 180, bottom = 22, top = 16, left = 12 + 8 * maxText.length;
  const plot = height - bottom - top;
  const step = (width - left) / days;
  const spikes = values.filter((v) => v.spike).length;
  const label = `Credits used per day in ${month}: ${summary.total} in total${max > 0n ? `, at most ${credits(fixedPlain(max))} in a day` : ""}${spikes ? `, ${spikes} unusual spike${spikes > 1 ? "s" : ""}` : ""}.`;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "bars" });
  svg.append(s("line", { x1: left, x2: width, y1: top + plot, y2: top + plot, class: "axis" }));
  svg.append(s("text", { x: left - 6, y: top + 4, class: "tick", "text-anchor": "end" }, maxText));
  svg.append(s("text", { x: left - 6, y: top + plot, class: "tick", "text-anchor": "end" }, "0"));
  for (const v of values) {
    const barHeight = max > 0n ? Number((v.micros * BigInt(plot * 100)) / max) / 100 : 0;
    const x = left + (v.day - 1) * step + step * 0.15;
    const bar = s("rect", { x, y: top + plot - barHeight, width: step * 0.7, height: Math.max(barHeight, v.micros > 0n ? 1 : 0), class: v.spike ? "bar spike" : "bar", "data-date": v.key, "data-value": v.amount });
    bar.append(s("title", {}, `${v.key}: ${credits(v.amount)} credits, ${v.count} events${v.spike ? " (unusual spike)" : ""}`));
    svg.append(bar);
    if (v.spike) svg.append(s("text", { x: x + step * 0.35, y: top + plot - barHeight - 3, class: "spike-mark", "text-anchor": "middle" }, "▲"));
    if (v.day === 1 || (v.day % 5 === 0 && (step >= 9 || v.day % 10 === 0))) svg.append(s("text", { x: x + step * 0.35, y: height - 6, class: "tick", "text-anchor": "middle" }, v.day));
  }
  $("usage-chart").replaceChildren(svg);
}

// Redrawn when its width changes (a phone turned, the frame resized), not on every resize.
new ResizeObserver(() => {
  const width = Math.floor($("usage-chart").clientWidth);
  if (!state.chart || !width || width === state.chart.width) return;
  renderChart(state.chart.month, state.chart.summary);
}).observe($("usage-chart"));

/** "3 messages", "1 minute", "2.5 minutes". */
function quantityText(quantity, unit) {
  if (!unit) return quantity;
  return `${quantity} ${unit}${quantity === "1" ? "" : "s"}`;
}

/** A length of time: "45 s", "3 min", "2 min 5 s", "1 h 2 min". */
function secondsText(total) {
  const hours = Math.floor(total / 3600), minutes = Math.floor((total % 3600) / 60), seconds = total % 60;
  const parts = [hours ? `${hours} h` : "", minutes ? `${minutes} min` : "", seconds || total === 0 ? `${seconds} s` : ""];
  return parts.filter(Boolean).join(" ");
}

/** What a usage row measured and at what rate. A call is billed in whole increments of its
 *  rate (60 s: a 125 s call is billed 3 min): the row's quantity is the seconds billed and its
 *  `duration_seconds` the call's length, so it reads "2 min 5 s, billed 3 min". */
function usageText(t) {
  if (!t.quantity) return "";
  const rate = t.rate ? creditsExact(t.rate) : null;
  if (t.unit === "second") {
    const billed = `${secondsText(Number(t.quantity))} billed`;
    const text = t.duration_seconds == null ? billed : `${secondsText(Number(t.duration_seconds))}, ${billed}`;
    return rate ? `${text} at ${rate} credits a minute` : text;
  }
  const what = quantityText(t.quantity, t.unit);
  if (!rate) return what;
  return t.unit === "minute" ? `${what} at ${rate} credits a minute` : `${what} at ${rate} credits each`;
}

// ---- transactions ----------------------------------------------------------------------------

function txQuery() {
  const params = new URLSearchParams();
  if (state.tx.type) params.set("type", state.tx.type);
  if (state.tx.agent) params.set("agent", state.tx.agent);
  return params;
}

async function loadTransactions(reset = false) {
  if (reset) state.tx = { ...state.tx, cursors: [null], index: 0 };
  const params = txQuery();
  params.set("limit", String(TX_PAGE_SIZE));
  const cursor = state.tx.cursors[state.tx.index];
  if (cursor) params.set("cursor", cursor);
  setError($("tx-error"), "");
  let page;
  try {
    page = await api("GET", wsPath(`/transactions?${params}`));
  } catch (error) {
    setError($("tx-error"), error.message);
    return;
  }
  state.tx.next = page.next_cursor;
  $("tx-table")
    .querySelector("tbody")
    .replaceChildren(...(page.data.length ? page.data.map(transactionRow) : [h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No transactions."))]));
  $("tx-page").textContent = `Page ${state.tx.index + 1}`;
  $("tx-newer").disabled = state.tx.index === 0;
  $("tx-older").disabled = !state.tx.next;
}

/** One history row. `data-label` names each cell where a phone's width stacks the row. */
function transactionRow(t) {
  return h(
    "tr",
    { "data-id": t.id },
    h("td", { "data-label": "Date" }, dateAndTime(t.occurred_at)),
    h("td", { "data-label": "Type" }, rowKindName(t.type)),
    h("td", { class: "nowrap", "data-label": "Agent" }, t.agent_id || ""),
    h("td", { class: "usage", "data-label": "Usage" }, usageText(t)),
    h("td", { class: "num", "data-label": "Credits", "data-value": t.amount }, credits(t.amount)),
    h("td", { class: "num", "data-label": "From plan" }, credits(t.plan_amount)),
    h("td", { class: "num", "data-label": "From wallet" }, credits(t.wallet_amount)),
    h("td", { class: "num", "data-label": "Wallet after" }, credits(t.wallet_balance_after)),
    h("td", { class: "ref", "data-label": "Reference" }, t.reference || t.description || ""),
  );
}

/** "Mar 20, 2027" and "10:00 UTC", each on one line. */
function dateAndTime(text) {
  const d = new Date(text);
  if (!text || Number.isNaN(d.getTime())) return text || "—";
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
  return [h("span", { class: "nowrap" }, date(text)), " ", h("span", { class: "nowrap" }, `${time} UTC`)];
}

$("tx-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  state.tx.type = $("tx-type").value;
  state.tx.agent = $("tx-agent").value.trim();
  loadTransactions(true);
});
$("tx-older").addEventListener("click", () => {
  if (!state.tx.next) return;
  state.tx.cursors[state.tx.index + 1] = state.tx.next;
  state.tx.index += 1;
  loadTransactions();
});
$("tx-newer").addEventListener("click", () => {
  if (state.tx.index === 0) return;
  state.tx.index -= 1;
  loadTransactions();
});

$("tx-csv").addEventListener("click", async () => {
  setError($("tx-csv-error"), "");
  const params = txQuery();
  params.set("format", "csv");
  try {
    const blob = await api("GET", wsPath(`/transactions?${params}`), undefined, { accept: "text/csv" });
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: `transactions-${state.workspace}-${new Date().toISOString().slice(0, 10)}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    setError($("tx-csv-error"), error.message);
  }
});

// ---- invoices, receipts and the portal -------------------------------------------------------

const RECEIPTS_SHOWN = 24;
const RECEIPT_KINDS = { topup: "Credits bought (top-up)", auto_recharge: "Automatic recharge" };

/** The section lists what it says: a receipt for every card payment, an invoice for every
 *  invoice Stripe made (paid plans). Either list can fail without the other. */
async function loadDocuments() {
  await Promise.all([loadReceipts(), loadInvoices()]);
}

async function loadReceipts() {
  setError($("rcpt-error"), "");
  let receipts;
  try {
    receipts = (await api("GET", wsPath(`/receipts?limit=${RECEIPTS_SHOWN}`))).data;
  } catch (error) {
    show($("rcpt-empty"), false);
    setError($("rcpt-error"), error.message);
    return;
  }
  show($("rcpt-empty"), receipts.length === 0);
  show($("rcpt-table"), receipts.length > 0);
  $("rcpt-table").querySelector("tbody").replaceChildren(...receipts.map(receiptRow));
}

function receiptRow(r) {
  return h(
    "tr",
    { "data-receipt": r.id },
    h("td", { "data-label": "Receipt" }, h("button", { type: "button", class: "link", "aria-label": `Open receipt ${r.number}`, onclick: () => openReceipt(r.id) }, r.number)),
    h("td", { "data-label": "Paid" }, date(r.paid_at)),
    h("td", { "data-label": "For" }, RECEIPT_KINDS[r.kind] || r.kind),
    h("td", { class: "num", "data-label": "Amount", "data-value": r.amount }, money(r.amount, r.currency)),
    h("td", { class: "num", "data-label": "Credits", "data-value": r.credits }, credits(r.credits)),
    h("td", { "data-label": "Card" }, r.card ? cardName(r.card) : "—"),
  );
}

/** Shows one receipt in the page, as the API answers it now, ready to print. */
async function openReceipt(id) {
  setError($("rcpt-error"), "");
  let r;
  try {
    r = await api("GET", wsPath(`/receipts/${encodeURIComponent(id)}`));
  } catch (error) {
    setError($("rcpt-error"), error.message);
    return;
  }
  const currency = r.currency;
  const refunded = toMicros(r.refunded_amount) > 0n;
  const view = $("receipt-view");
  view.dataset.receipt = r.id;
  view.replaceChildren(
    ...[
    h("h3", { id: "receipt-title" }, `Receipt ${r.number}`),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Paid"),
      h("dd", {}, date(r.paid_at, true)),
      h("dt", {}, "Payment"),
      h("dd", {}, RECEIPT_KINDS[r.kind] || r.kind),
      h("dt", {}, "Card"),
      h("dd", {}, r.card ? cardName(r.card) : "—"),
      h("dt", {}, "Reference"),
      h("dd", { class: "ref" }, r.id),
    ),
    h(
      "table",
      { class: "receipt-lines stack" },
      h("caption", { class: "visually-hidden" }, `What receipt ${r.number} paid for`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Item"), h("th", { scope: "col" }, "Credits"), h("th", { scope: "col" }, "Price per credit"), h("th", { scope: "col" }, "Amount"))),
      h(
        "tbody",
        {},
        h(
          "tr",
          {},
          h("td", { "data-label": "Item" }, "Prepaid usage credits"),
          h("td", { class: "num", "data-label": "Credits", "data-value": r.credits }, credits(r.credits)),
          h("td", { class: "num", "data-label": "Price per credit", "data-value": r.credit_price }, money(r.credit_price, currency, { exact: true })),
          h("td", { class: "num", "data-label": "Amount", "data-value": r.amount }, money(r.amount, currency)),
        ),
      ),
      h(
        "tfoot",
        {},
        h("tr", {}, h("th", { scope: "row", colspan: 3 }, "Tax"), h("td", { class: "num", "data-label": "Tax", "data-value": r.tax }, money(r.tax, currency))),
        h("tr", { class: "total" }, h("th", { scope: "row", colspan: 3 }, "Total paid"), h("td", { class: "num", "data-label": "Total paid", "data-value": r.amount }, money(r.amount, currency))),
      ),
    ),
    h("p", { class: "hint" }, "No tax is charged: credits are prepaid usage."),
    refunded ? h("p", { class: "warning" }, `Refunded: ${money(r.refunded_amount, currency)} (${credits(r.refunded_credits)} credits).`) : null,
    h(
      "div",
      { class: "actions no-print" },
      h("button", { type: "button", onclick: () => window.print() }, "Print"),
      h("button", { type: "button", class: "secondary", onclick: closeReceipt }, "Close"),
    ),
    ].filter(Boolean),
  );
  show(view, true);
  view.focus();
}

function closeReceipt() {
  const id = $("receipt-view").dataset.receipt;
  show($("receipt-view"), false);
  $("rcpt-table").querySelector(`tr[data-receipt="${CSS.escape(id)}"] button`)?.focus();
}

async function loadInvoices() {
  setError($("inv-error"), "");
  try {
    const invoices = await api("GET", wsPath("/invoices"));
    show($("inv-empty"), invoices.data.length === 0);
    show($("inv-table"), invoices.data.length > 0);
    $("inv-table")
      .querySelector("tbody")
      .replaceChildren(
        ...invoices.data.map((i) =>
          h(
            "tr",
            {},
            h("td", { "data-label": "Date" }, date(i.created)),
            h("td", { "data-label": "Number" }, i.number || i.id),
            h("td", { class: "num", "data-label": "Amount" }, money(i.amount_paid, i.currency.toUpperCase())),
            h("td", { "data-label": "Status" }, i.status || ""),
            h(
              "td",
              { "data-label": "Documents" },
              i.hosted_invoice_url ? h("a", { href: i.hosted_invoice_url, target: "_blank", rel: "noopener noreferrer" }, "View") : null,
              i.hosted_invoice_url && i.invoice_pdf ? " · " : null,
              i.invoice_pdf ? h("a", { href: i.invoice_pdf, target: "_blank", rel: "noopener noreferrer" }, "PDF") : null,
            ),
          ),
        ),
      );
  } catch (error) {
    show($("inv-empty"), false);
    setError($("inv-error"), error.message);
  }
}

async function openPortal() {
  setError($("portal-error"), "");
  // Opened at once (a click's popup), pointed at Stripe once the session exists.
  const popup = window.open("", "_blank");
  try {
    const session = await api("POST", wsPath("/billing-portal"), {}, { idempotencyKey: newKey() });
    if (popup) {
      popup.opener = null;
      popup.location.href = session.url;
    } else window.location.href = session.url;
  } catch (error) {
    popup?.close();
    setError($("portal-error"), error.message);
    $("invoices").scrollIntoView({ block: "nearest" });
  }
}
$("portal").addEventListener("click", openPortal);

// ---- start -----------------------------------------------------------------------------------

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  $("signin-token").value = "";
  if (token) useToken(token);
});

if (EMBEDDED) {
  // Nothing secret: the embedding product answers with the token, to this origin only.
  window.parent.postMessage({ type: "voice-billing:ready" }, "*");
} else {
  show($("signin"), true);
  $("page-status").textContent = "";
}
