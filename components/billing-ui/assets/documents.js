// Invoices and receipts: a receipt for every card payment (opened in the page, ready to print),
// Stripe's invoices of paid plans, and the billing portal.

import { api, newKey, wsPath } from "./api.js";
import { $, h, setError, show } from "./dom.js";
import { cardName, credits, date, money, toMicros } from "./format.js";

const RECEIPTS_SHOWN = 24;
const RECEIPT_KINDS = { topup: "Credits bought (top-up)", auto_recharge: "Automatic recharge" };

/** The section lists what it says: a receipt for every card payment, an invoice for every
 *  invoice Stripe made (paid plans). Either list can fail without the other. */
export async function loadDocuments() {
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

/** Opens a Stripe billing-portal session in a new tab. */
export async function openPortal() {
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

/** Wires "Manage payment details". */
export function wireDocuments() {
  $("portal").addEventListener("click", openPortal);
}
