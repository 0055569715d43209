//! Receipts (R20): every card payment that succeeded (a manual top-up or an automatic recharge)
//! has one, numbered per workspace in the order the payments succeeded. A receipt says what was
//! paid, when, with which card, and what it bought: credits at the credit price the payment was
//! priced at. No tax is charged on credits (they are prepaid usage), so the breakdown is credits
//! x price = amount. Refunds and disputes that took money back are shown on it.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::Result;
use crate::calendar;
use crate::money;
use crate::row::{i, int, opt_text, t, text};
use crate::statuses::PaymentKind;
use crate::storage::Storage;
use crate::workspace;

/// The receipts a page shows when the client does not say.
pub const LIST_LIMIT_DEFAULT: i64 = 24;
/// The most receipts one page shows.
pub const LIST_LIMIT_MAX: i64 = 100;

/// The card on a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptCard {
    /// Card brand (`visa`, ...).
    pub brand: String,
    /// Last 4 digits.
    pub last4: String,
}

/// One receipt, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Receipt {
    /// The payment's id (`tp_...`, `ar_...`).
    pub id: String,
    /// `R-0001`, `R-0002`, ... per workspace, in the order the payments succeeded.
    pub number: String,
    /// `topup` or `auto_recharge`.
    pub kind: PaymentKind,
    /// When the payment succeeded (RFC 3339, the workspace's clock).
    pub paid_at: String,
    /// Money charged, in `currency`.
    pub amount: Decimal,
    /// ISO currency.
    pub currency: String,
    /// Credits bought.
    pub credits: Decimal,
    /// Price of one credit, in `currency`, when the payment was made.
    pub credit_price: Decimal,
    /// Tax charged: none on prepaid credits.
    pub tax: Decimal,
    /// The card that paid, when Stripe reported it.
    pub card: Option<ReceiptCard>,
    /// Money refunded or taken back by disputes since.
    pub refunded_amount: Decimal,
    /// Credits those took back.
    pub refunded_credits: Decimal,
}

const RECEIPT_COLUMNS: &str =
    "id, kind, paid_at, amount_micros, credits_micros, credit_price_micros,
    card_brand, card_last4, receipt_number, reversed_amount_micros, reversed_credits_micros";

fn receipt_from_row(row: &crate::Row, currency: &str) -> Result<Receipt> {
    let card = match (opt_text(row, 6)?, opt_text(row, 7)?) {
        (Some(brand), Some(last4)) => Some(ReceiptCard { brand, last4 }),
        _ => None,
    };
    Ok(Receipt {
        id: text(row, 0)?,
        kind: PaymentKind::parse(&text(row, 1)?),
        paid_at: calendar::rfc3339(int(row, 2)?),
        amount: money::to_decimal(int(row, 3)?),
        currency: currency.to_owned(),
        credits: money::to_decimal(int(row, 4)?),
        credit_price: money::to_decimal(int(row, 5)?),
        tax: Decimal::ZERO,
        card,
        number: format!("R-{:04}", int(row, 8)?),
        refunded_amount: money::to_decimal(int(row, 9)?),
        refunded_credits: money::to_decimal(int(row, 10)?),
    })
}

/// A workspace's receipts, newest first: `limit` (1..=100, default 24) of them.
pub async fn list<S: Storage>(
    db: &S,
    workspace_id: &str,
    limit: Option<i64>,
) -> Result<Vec<Receipt>> {
    let limit = crate::views::page_limit(limit, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let ws = workspace::get(db, workspace_id).await?;
    let sql = format!(
        "SELECT {RECEIPT_COLUMNS} FROM payments
         WHERE workspace_id = ?1 AND receipt_number IS NOT NULL
         ORDER BY receipt_number DESC LIMIT ?2"
    );
    let rows = db.query(&sql, &[t(&ws.id), i(limit)]).await?;
    rows.iter()
        .map(|row| receipt_from_row(row, &ws.currency))
        .collect()
}

/// One receipt of a workspace (by its payment's id), or 404 `not_found`: also for a payment
/// that has not succeeded.
pub async fn get<S: Storage>(db: &S, workspace_id: &str, payment_id: &str) -> Result<Receipt> {
    let ws = workspace::get(db, workspace_id).await?;
    let sql = format!(
        "SELECT {RECEIPT_COLUMNS} FROM payments
         WHERE id = ?1 AND workspace_id = ?2 AND receipt_number IS NOT NULL"
    );
    let rows = db.query(&sql, &[t(payment_id), t(&ws.id)]).await?;
    rows.first().map_or(
        Err(crate::LedgerError::NotFound { what: "receipt" }),
        |row| receipt_from_row(row, &ws.currency),
    )
}
