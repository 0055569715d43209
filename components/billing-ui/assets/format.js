// Amounts, money, dates, cards and names as the page shows them. Every amount is a decimal
// string from the API, handled in micro-units (BigInt) and never through floating point.

import { h, setError } from "./dom.js";
import { state } from "./state.js";

export const MICROS = 1000000n;

/** A decimal string ("12.5", "-0.000001") in micro-units, or null when it is not one. */
export function toMicros(text) {
  const m = /^(-)?(\d{1,15})(?:\.(\d{1,6}))?$/.exec(String(text ?? "").trim());
  if (!m) return null;
  const value = BigInt(m[2]) * MICROS + BigInt((m[3] || "").padEnd(6, "0"));
  return m[1] ? -value : value;
}

/** Micro-units as a decimal string with exactly `digits` decimals (rounded half away from 0). */
export function fixed(micros, digits = 2) {
  const negative = micros < 0n;
  let value = negative ? -micros : micros;
  const unit = 10n ** BigInt(6 - digits);
  value = (value + unit / 2n) / unit;
  const text = value.toString().padStart(digits + 1, "0");
  const whole = text.slice(0, text.length - digits).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const fraction = digits ? "." + text.slice(text.length - digits) : "";
  return (negative && value !== 0n ? "−" : "") + whole + fraction;
}

/** Micro-units back to the API's decimal form. */
export function fixedPlain(micros) {
  const negative = micros < 0n;
  const value = negative ? -micros : micros;
  const whole = value / MICROS;
  const fraction = (value % MICROS).toString().padStart(6, "0").replace(/0+$/, "");
  return (negative ? "-" : "") + whole + (fraction ? "." + fraction : "");
}

/** A credits amount for display (2 decimals); the exact value stays in `data-value`. */
export function credits(text) {
  const micros = toMicros(text);
  return micros === null ? "—" : fixed(micros, 2);
}

/** A rate in credits with every decimal it has, never fewer than two ("0.05", "0.0125"). */
export function creditsExact(text) {
  const micros = toMicros(text);
  return micros === null ? "—" : fixed(micros, Math.max(2, decimalsOf(micros)));
}

/** Credits in a sentence: "2,500" rather than "2,500.00", else two decimals. */
export function creditsInWords(micros) {
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
export function money(text, currency = state.summary?.currency || "USD", { exact = false } = {}) {
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
export function setAmount(el, text, format = credits) {
  el.textContent = format(text);
  el.dataset.value = text ?? "";
}

export function date(text, withTime = false) {
  if (!text) return "—";
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) return text;
  const options = withTime
    ? { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "UTC" }
    : { year: "numeric", month: "short", day: "numeric", timeZone: "UTC" };
  return d.toLocaleString(undefined, options) + (withTime ? " UTC" : "");
}

export function cardName(card) {
  const brand = card.brand ? card.brand[0].toUpperCase() + card.brand.slice(1) : "Card";
  return `${brand} •••• ${card.last4}`;
}

/** "Visa •••• 4242, expires 12/2030", each half kept on one line. */
export function cardNodes(card) {
  const expiry = `expires ${String(card.exp_month).padStart(2, "0")}/${card.exp_year}`;
  return [h("span", { class: "nowrap" }, cardName(card)), ", ", h("span", { class: "nowrap" }, expiry)];
}

/** Checks an amount field against optional bounds; returns its micros or shows why not. */
export function checkAmount(input, errorEl, { min, max, allowZero = false } = {}) {
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

const KINDS = { call: "Calls", message: "Messages", sms: "SMS", stt: "Speech-to-text", ai_task: "AI tasks", topup: "Top-up", auto_recharge: "Auto-recharge", plan_grant: "Plan credits", plan_expiry: "Plan credits expired", refund: "Refund", dispute: "Dispute" };
export const kindName = (k) => KINDS[k] || k;
/** Usage kinds inside a sentence, in the page's order of kinds: "calls and AI tasks". */
const KINDS_IN_WORDS = { call: "calls", message: "messages", sms: "SMS", stt: "speech-to-text", ai_task: "AI tasks" };
const KIND_ORDER = Object.keys(KINDS_IN_WORDS);
export function kindsInWords(kinds) {
  const rank = (k) => (KIND_ORDER.includes(k) ? KIND_ORDER.indexOf(k) : KIND_ORDER.length);
  const names = [...kinds].sort((a, b) => rank(a) - rank(b)).map((k) => KINDS_IN_WORDS[k] || k);
  return names.length > 1 ? `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}` : names.join("");
}
/** One history row's type: one call, one message. */
const ROW_KINDS = { ...KINDS, call: "Call", message: "Message", ai_task: "AI task" };
export const rowKindName = (k) => ROW_KINDS[k] || k;
