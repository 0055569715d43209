//! Money in: manual top-ups (R9), payment methods (R10), auto-recharge decisions (R11), refunds
//! and disputes (R12), and settlement exactly once whichever of the synchronous answer, the
//! webhook or the reconciliation job (R21) reports it first.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar::{self, SECS_PER_DAY};
use crate::catalog::Catalog;
use crate::money;
use crate::post::{self, Entry};
use crate::resolve;
use crate::row::{i, int, oi, opt_text, ot, t, text};
use crate::settlement::{Failure, FailureCode, Report, Settlement};
use crate::statuses::{PaymentKind, PaymentStatus};
use crate::storage::Storage;
use crate::tx;
use crate::workspace::{self, WorkspaceState};
use crate::{LedgerError, LimitKind, Result};

/// Seconds after which a pending payment is reconciled against Stripe (R21).
pub const RECONCILE_AFTER_SECS: i64 = 300;

/// A top-up or recharge as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payment {
    /// Our id (also the Stripe idempotency key of its PaymentIntent).
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// `topup` or `auto_recharge`.
    pub kind: PaymentKind,
    /// `pending`, `succeeded` or `failed`.
    pub status: PaymentStatus,
    /// Currency charged.
    pub amount: Decimal,
    /// Credits it buys.
    pub credits: Decimal,
    /// Stripe PaymentIntent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_intent_id: Option<String>,
    /// Failure code (`card_declined`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    /// Failure message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Created, in seconds since the epoch.
    #[serde(skip)]
    pub created_at_secs: i64,
    #[serde(skip)]
    /// Money charged, in micro-units of the currency (column `amount_micros`).
    pub amount_money_micros: i64,
    #[serde(skip)]
    /// Micro-credits it buys.
    pub credits_micros: i64,
}

impl Payment {
    /// Whether Stripe is still to be asked or heard from (the payment is pending): a request
    /// for a payment already settled answers with it instead.
    pub fn awaits_stripe(&self) -> bool {
        self.status == PaymentStatus::Pending
    }

    /// The product code of a failed payment (R9), `None` unless it failed.
    pub fn failure(&self) -> Option<FailureCode> {
        (self.status == PaymentStatus::Failed)
            .then(|| FailureCode::parse(self.failure_code.as_deref()))
    }
}

const PAYMENT_COLUMNS: &str = "id, workspace_id, kind, status, amount_micros, credits_micros,
    stripe_payment_intent_id, failure_code, failure_message, created_at, reversed_credits_micros,
    reversed_amount_micros, transaction_id";

/// The one payment a read or `RETURNING` gave, or `NotFound` naming it as `what`.
fn one_payment(rows: &[crate::Row], what: &'static str) -> Result<Payment> {
    rows.first()
        .map_or(Err(LedgerError::NotFound { what }), payment_from_row)
}

fn payment_from_row(r: &crate::Row) -> Result<Payment> {
    Ok(Payment {
        id: text(r, 0)?,
        workspace_id: text(r, 1)?,
        kind: PaymentKind::parse(&text(r, 2)?),
        status: PaymentStatus::parse(&text(r, 3)?),
        amount_money_micros: int(r, 4)?,
        credits_micros: int(r, 5)?,
        amount: money::to_decimal(int(r, 4)?),
        credits: money::to_decimal(int(r, 5)?),
        payment_intent_id: opt_text(r, 6)?,
        failure_code: opt_text(r, 7)?,
        failure_message: opt_text(r, 8)?,
        created_at: calendar::rfc3339(int(r, 9)?),
        created_at_secs: int(r, 9)?,
    })
}

/// A card charge (manual top-up or recharge amount) must lie within the catalog's top-up bounds.
fn check_charge_bounds(catalog: &Catalog, amount_money_micros: i64) -> Result<()> {
    let currency = || catalog.settings().currency.clone();
    if amount_money_micros < catalog.topup_min_money_micros {
        return Err(LedgerError::AmountBelowMinimum {
            minimum: catalog.settings().topup_min,
            currency: currency(),
        });
    }
    if amount_money_micros > catalog.topup_max_money_micros {
        return Err(LedgerError::AmountAboveMaximum {
            maximum: catalog.settings().topup_max,
            currency: currency(),
        });
    }
    Ok(())
}

/// Refuses a top-up amount within the catalog's bounds that Stripe cannot charge in the
/// currency (`unchargeable`: why, e.g. a fraction of a cent), rather than leaving it pending;
/// an amount out of bounds is left to [`create_topup`], which says which bound.
pub fn refuse_unchargeable(
    catalog: &Catalog,
    amount_money_micros: i64,
    unchargeable: Option<String>,
) -> Result<()> {
    match unchargeable {
        Some(why) if check_charge_bounds(catalog, amount_money_micros).is_ok() => {
            Err(LedgerError::invalid(
                "invalid_amount",
                "amount",
                format!("amount cannot be charged: {why}"),
            ))
        }
        _ => Ok(()),
    }
}

/// The pending payments of a workspace, oldest first (at most 20): the summary's list.
pub(crate) async fn pending_of<S: Storage>(db: &S, workspace_id: &str) -> Result<Vec<Payment>> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE workspace_id = ?1 AND status = 'pending'
         ORDER BY created_at LIMIT 20"
    );
    let rows = db.query(&sql, &[t(workspace_id)]).await?;
    rows.iter().map(payment_from_row).collect()
}

/// Reads a payment of a workspace, or 404.
pub async fn get<S: Storage>(db: &S, workspace_id: &str, payment_id: &str) -> Result<Payment> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1 AND workspace_id = ?2");
    let rows = db.query(&sql, &[t(payment_id), t(workspace_id)]).await?;
    one_payment(&rows, "topup")
}

/// Finds a payment by its Stripe PaymentIntent id.
pub async fn find_by_intent<S: Storage>(
    db: &S,
    payment_intent_id: &str,
) -> Result<Option<Payment>> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE stripe_payment_intent_id = ?1");
    let rows = db.query(&sql, &[t(payment_intent_id)]).await?;
    rows.first().map(payment_from_row).transpose()
}

/// The payment a PaymentIntent is attached to, else the one `payment_id` names, in one read:
/// what `resolve::payment_of_intent` chooses from.
pub(crate) async fn by_intent_or_id<S: Storage>(
    db: &S,
    payment_intent_id: &str,
    payment_id: Option<&str>,
) -> Result<Option<Payment>> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM (
             SELECT 0 AS rank, * FROM payments WHERE stripe_payment_intent_id = ?1
             UNION ALL SELECT 1 AS rank, * FROM payments WHERE id = ?2
         ) ORDER BY rank LIMIT 1"
    );
    let rows = db
        .query(&sql, &[t(payment_intent_id), ot(payment_id)])
        .await?;
    rows.first().map(payment_from_row).transpose()
}

async fn by_id<S: Storage>(db: &S, payment_id: &str) -> Result<Payment> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1");
    let rows = db.query(&sql, &[t(payment_id)]).await?;
    one_payment(&rows, "payment")
}

/// Starts a manual top-up of `amount` (currency): checks the bounds (R9) and records it pending.
/// `payment_id` is the caller's id for it (reused as the Stripe idempotency key); creating the
/// same id twice with the same amount returns the first.
pub async fn create_topup<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    payment_id: &str,
    amount: Decimal,
    real_now_secs: i64,
) -> Result<Payment> {
    workspace::validate_id("id", payment_id)?;
    let amount_money_micros = money::decimal_to_micros("amount", amount, false)?;
    check_charge_bounds(catalog, amount_money_micros)?;
    let credits_micros =
        money::credits_for_money(amount_money_micros, catalog.credit_price_money_micros);
    tx::immediate(db, async |db| {
        let ws = workspace::get(db, workspace_id).await?;
        insert_pending(
            db,
            &ws,
            payment_id,
            PaymentKind::Topup,
            (
                amount_money_micros,
                credits_micros,
                catalog.credit_price_money_micros,
            ),
            ws.now(real_now_secs),
        )
        .await
    })
    .await
}

/// Records a pending payment of `(amount money, micro-credits, credit price money)`, the money in
/// micro-units of the currency.
async fn insert_pending<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    payment_id: &str,
    kind: PaymentKind,
    (amount_money_micros, credits_micros, credit_price_money_micros): (i64, i64, i64),
    now: i64,
) -> Result<Payment> {
    let sql = format!(
        "INSERT INTO payments (id, workspace_id, kind, amount_micros, credits_micros, credit_price_micros, status,
                               created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)
         ON CONFLICT (id) DO NOTHING RETURNING {PAYMENT_COLUMNS}"
    );
    let rows = db
        .query(
            &sql,
            &[
                t(payment_id),
                t(&ws.id),
                t(kind.as_str()),
                i(amount_money_micros),
                i(credits_micros),
                i(credit_price_money_micros),
                i(now),
            ],
        )
        .await?;
    if let Some(row) = rows.first() {
        return payment_from_row(row);
    }
    let existing = by_id(db, payment_id).await?;
    if existing.workspace_id != ws.id
        || existing.amount_money_micros != amount_money_micros
        || existing.kind != kind
    {
        return Err(LedgerError::IdempotencyConflict);
    }
    Ok(existing)
}

/// Records the Stripe PaymentIntent created for a payment, unless the payment already has
/// another one (a `payment_intent_mismatch` conflict). Marks the payment as looked at now.
pub async fn attach_intent<S: Storage>(
    db: &S,
    payment_id: &str,
    payment_intent_id: &str,
    real_now_secs: i64,
) -> Result<()> {
    let rows = db
        .query(
            "UPDATE payments SET stripe_payment_intent_id = ?2, updated_at = ?3
             WHERE id = ?1 AND (stripe_payment_intent_id IS NULL OR stripe_payment_intent_id = ?2) RETURNING id",
            &[t(payment_id), t(payment_intent_id), i(real_now_secs)],
        )
        .await?;
    if rows.is_empty() {
        return Err(intent_mismatch());
    }
    Ok(())
}

/// The conflict of a payment reported through another PaymentIntent than the one it has.
pub fn intent_mismatch() -> LedgerError {
    LedgerError::Conflict {
        code: "payment_intent_mismatch",
        message: "This payment has another PaymentIntent.".into(),
    }
}

/// What a payment was made with, as far as whoever reports its success knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaidWith {
    /// The card that paid (its brand and last 4 go on the receipt), when known.
    pub card: Option<PaymentMethod>,
    /// The customer paid with a new card to save it (Stripe's `setup_future_usage`): the card
    /// becomes the workspace's card when, and only when, this payment succeeds (R10).
    pub saves_card: bool,
}

impl PaidWith {
    /// A charge of the card on file (or of a card whose details the reporter has).
    pub fn card(card: PaymentMethod) -> Self {
        Self {
            card: Some(card),
            saves_card: false,
        }
    }
}

/// Which payment a [`Report`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported<'a> {
    /// Our payment, by id, and the PaymentIntent the report came from when there is one.
    Payment {
        /// Our payment id.
        id: &'a str,
        /// The PaymentIntent Stripe answered with or named.
        intent_id: Option<&'a str>,
    },
    /// A PaymentIntent a webhook names (`ledger::resolve::payment_of_intent` finds the payment).
    Intent {
        /// `pi_...`.
        intent_id: &'a str,
        /// Our payment id from the PaymentIntent's `metadata[payment_id]`.
        metadata_payment_id: Option<&'a str>,
    },
}

impl Reported<'_> {
    fn intent_id(&self) -> Option<&str> {
        match self {
            Self::Payment { intent_id, .. } => *intent_id,
            Self::Intent { intent_id, .. } => Some(intent_id),
        }
    }
}

/// A payment after [`settle`]: as it now is, and what the report meant for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The payment as written (or as it was, when nothing changed).
    pub payment: Payment,
    /// The ledger's classification of the report.
    pub settlement: Settlement,
}

/// What became of a payment a report settled, as the reconciliation counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Credited (now or before).
    Succeeded,
    /// Settled failed.
    Failed,
    /// Still pending at Stripe (processing, or waiting for the customer).
    Pending,
    /// Stripe could not be reached or refused our credentials: left pending, try later.
    Unreachable,
}

impl Settled {
    /// What the payment now is, or, when the report left it pending, why.
    pub fn outcome(&self) -> Outcome {
        match (&self.settlement, self.payment.status) {
            (Settlement::StripeFailed, _) => Outcome::Unreachable,
            (Settlement::Wait | Settlement::AwaitCustomer { .. }, _) => Outcome::Pending,
            (_, PaymentStatus::Succeeded) => Outcome::Succeeded,
            (_, PaymentStatus::Failed) => Outcome::Failed,
            (_, PaymentStatus::Pending | PaymentStatus::Other) => Outcome::Pending,
        }
    }
}

/// Settles a payment from what Stripe reported (R9, R11, R21), whoever observed it: ONE
/// transaction reads the payment once, records the PaymentIntent it learns of, classifies the
/// report for the payment's kind (`settlement`) and writes the outcome. `None` when the report
/// is not about a payment of ours (no such payment for the PaymentIntent, or the payment has
/// another PaymentIntent); an unknown payment id is `NotFound`.
///
/// - Succeeded: credited exactly once; every later report returns it unchanged, except that a
///   card a report names fills a receipt that had none. The success numbers the payment's
///   receipt and, for a payment that saves its card, makes that card the workspace's (a card
///   that was declined, or whose payment never completed, never replaces the one on file).
/// - Failed: recorded (a payment that already succeeded is left as it is); a hard decline of an
///   automatic charge disables auto-recharge with a warning, a soft one re-arms it (bounded by
///   the daily cap).
/// - Still pending (Stripe processing, or waiting for the customer): marked as looked at now,
///   which moves it to the back of the reconciliation queue. Stripe not answering leaves it
///   untouched except for a PaymentIntent learnt now.
pub async fn settle<S: Storage>(
    db: &S,
    reported: Reported<'_>,
    report: &Report<'_>,
    paid: &PaidWith,
    real_now_secs: i64,
) -> Result<Option<Settled>> {
    tx::immediate(db, async |db| {
        let payment = match reported {
            Reported::Payment { id, .. } => by_id(db, id).await?,
            Reported::Intent {
                intent_id,
                metadata_payment_id,
            } => match resolve::payment_of_intent(db, intent_id, metadata_payment_id).await? {
                Some(payment) => payment,
                None => return Ok(None),
            },
        };
        let Some(payment) = record_intent(db, payment, reported.intent_id(), real_now_secs).await?
        else {
            return Ok(None);
        };
        let settlement = report.settlement(payment.kind);
        let payment = match &settlement {
            Settlement::Succeed => record_success(db, payment, paid, real_now_secs).await?,
            Settlement::Fail(failure) => {
                record_failure(db, payment, failure, real_now_secs).await?
            }
            Settlement::Wait | Settlement::AwaitCustomer { .. } => {
                db.execute(
                    "UPDATE payments SET updated_at = ?2 WHERE id = ?1",
                    &[t(&payment.id), i(real_now_secs)],
                )
                .await?;
                payment
            }
            Settlement::StripeFailed => payment,
        };
        Ok(Some(Settled {
            payment,
            settlement,
        }))
    })
    .await
}

/// Records the PaymentIntent a report names on a payment that has none; `None` when the payment
/// has another (nothing is settled from this one).
async fn record_intent<S: Storage>(
    db: &S,
    mut payment: Payment,
    intent_id: Option<&str>,
    real_now_secs: i64,
) -> Result<Option<Payment>> {
    match (intent_id, payment.payment_intent_id.as_deref()) {
        (None, _) => Ok(Some(payment)),
        (Some(reported), Some(own)) => Ok((reported == own).then_some(payment)),
        (Some(reported), None) => {
            db.execute(
                "UPDATE payments SET stripe_payment_intent_id = ?2, updated_at = ?3 WHERE id = ?1",
                &[t(&payment.id), t(reported), i(real_now_secs)],
            )
            .await?;
            payment.payment_intent_id = Some(reported.to_owned());
            Ok(Some(payment))
        }
    }
}

/// Credits a payment Stripe reports succeeded, exactly once (see [`settle`]).
async fn record_success<S: Storage>(
    db: &S,
    payment: Payment,
    paid: &PaidWith,
    real_now_secs: i64,
) -> Result<Payment> {
    let (brand, last4) = match &paid.card {
        Some(card) => (Some(card.brand.as_str()), Some(card.last4.as_str())),
        None => (None, None),
    };
    if payment.status == PaymentStatus::Succeeded {
        if paid.card.is_some() {
            db.execute(
                "UPDATE payments SET card_brand = ?2, card_last4 = ?3 WHERE id = ?1 AND card_last4 IS NULL",
                &[t(&payment.id), ot(brand), ot(last4)],
            )
            .await?;
        }
        return Ok(payment);
    }
    let ws = workspace::get(db, &payment.workspace_id).await?;
    let now = ws.now(real_now_secs);
    let posted = post::post(
        db,
        &ws.id,
        &Entry {
            kind: payment.kind.as_str(),
            reference: Some(payment.payment_intent_id.as_deref().unwrap_or(&payment.id)),
            wallet_delta_micros: payment.credits_micros,
            occurred_at: now,
            description: Some(if payment.kind == PaymentKind::Topup {
                "top-up"
            } else {
                "automatic recharge"
            }),
            ..Entry::default()
        },
        now,
    )
    .await?;
    let sql = format!(
        "UPDATE payments SET status = 'succeeded', transaction_id = ?2, failure_code = NULL,
             failure_message = NULL, updated_at = ?3, paid_at = ?3, card_brand = ?4, card_last4 = ?5,
             receipt_number = (SELECT COALESCE(MAX(receipt_number), 0) + 1 FROM payments WHERE workspace_id = ?6)
         WHERE id = ?1 RETURNING {PAYMENT_COLUMNS}"
    );
    let rows = db
        .query(
            &sql,
            &[
                t(&payment.id),
                i(posted.transaction_id),
                i(now),
                ot(brand),
                ot(last4),
                t(&ws.id),
            ],
        )
        .await?;
    let settled = one_payment(&rows, "payment")?;
    if payment.kind == PaymentKind::AutoRecharge {
        db.execute("UPDATE workspaces SET auto_recharge_warning = NULL WHERE id = ?1 AND auto_recharge_enabled = 1", &[t(&ws.id)]).await?;
    }
    if let (true, Some(card)) = (paid.saves_card, &paid.card) {
        set_payment_method(db, &ws.id, card).await?;
    }
    workspace::after_credit(db, &ws.id).await?;
    Ok(settled)
}

/// Records a failed payment (see [`settle`]).
async fn record_failure<S: Storage>(
    db: &S,
    payment: Payment,
    failure: &Failure,
    real_now_secs: i64,
) -> Result<Payment> {
    if payment.status == PaymentStatus::Succeeded {
        return Ok(payment);
    }
    let code = failure.code.as_str();
    let sql = format!(
        "UPDATE payments SET status = 'failed', failure_code = ?2, failure_message = ?3, updated_at = ?4
         WHERE id = ?1 RETURNING {PAYMENT_COLUMNS}"
    );
    let rows = db
        .query(
            &sql,
            &[
                t(&payment.id),
                t(code),
                t(&failure.message),
                i(real_now_secs),
            ],
        )
        .await?;
    let settled = one_payment(&rows, "payment")?;
    if payment.kind == PaymentKind::AutoRecharge {
        let (enabled_sql, warning) = if failure.hard_decline {
            (
                "0",
                format!(
                    "Auto-recharge was turned off: the card was declined ({code}). Update your payment method."
                ),
            )
        } else {
            (
                "auto_recharge_enabled",
                format!("The last automatic recharge failed ({code}); it will be retried."),
            )
        };
        let sql = format!(
            "UPDATE workspaces SET auto_recharge_enabled = {enabled_sql}, auto_recharge_warning = ?2,
                 auto_recharge_armed = ?3 WHERE id = ?1"
        );
        db.execute(
            &sql,
            &[
                t(&payment.workspace_id),
                t(warning),
                i(i64::from(!failure.hard_decline)),
            ],
        )
        .await?;
    }
    Ok(settled)
}

/// Reverses the credits a refund or dispute takes back (R12), once per Stripe object id: the
/// refund or dispute takes back `amount_money_micros` of the money paid. The credits reversed are
/// the paid share of the payment's credits, rounded up, and never more than it bought; the wallet
/// may go negative. Returns the micro-credits reversed now.
pub async fn reverse<S: Storage>(
    db: &S,
    payment_id: &str,
    reversal_id: &str,
    kind: &str,
    amount_money_micros: i64,
    real_now_secs: i64,
) -> Result<i64> {
    if kind != "refund" && kind != "dispute" {
        return Err(LedgerError::invalid(
            "validation_error",
            "kind",
            "kind is refund or dispute",
        ));
    }
    if amount_money_micros <= 0 {
        return Err(LedgerError::invalid(
            "invalid_amount",
            "amount",
            "amount must be greater than zero",
        ));
    }
    tx::immediate(db, async |db| {
        let existing = db.query("SELECT credits_micros FROM reversals WHERE id = ?1", &[t(reversal_id)]).await?;
        if let Some(row) = existing.first() {
            return int(row, 0);
        }
        let rows = db
            .query(
                "SELECT workspace_id, status, amount_micros, credits_micros, reversed_amount_micros, reversed_credits_micros
                 FROM payments WHERE id = ?1",
                &[t(payment_id)],
            )
            .await?;
        let row = rows.first().ok_or(LedgerError::NotFound { what: "payment" })?;
        let (workspace_id, status) = (text(row, 0)?, text(row, 1)?);
        let (paid_money_micros, credits, reversed_money_micros, reversed_credits) = (int(row, 2)?, int(row, 3)?, int(row, 4)?, int(row, 5)?);
        if PaymentStatus::parse(&status) != PaymentStatus::Succeeded {
            return Err(LedgerError::Conflict { code: "payment_not_succeeded", message: "Only a succeeded payment can be reversed.".into() });
        }
        let reversed_after_money_micros = (reversed_money_micros + amount_money_micros).min(paid_money_micros);
        let credits_target = money::fraction_ceil(credits, reversed_after_money_micros, paid_money_micros).min(credits);
        let credits_now = credits_target - reversed_credits;
        let ws = workspace::get(db, &workspace_id).await?;
        let now = ws.now(real_now_secs);
        let transaction_id = if credits_now > 0 {
            let posted = post::post(
                db,
                &ws.id,
                &Entry {
                    kind,
                    reference: Some(reversal_id),
                    wallet_delta_micros: -credits_now,
                    occurred_at: now,
                    description: Some(if kind == "refund" { "refund" } else { "dispute" }),
                    ..Entry::default()
                },
                now,
            )
            .await?;
            Some(posted.transaction_id)
        } else {
            None
        };
        db.execute(
            "INSERT INTO reversals (id, payment_id, kind, amount_micros, credits_micros, transaction_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &[t(reversal_id), t(payment_id), t(kind), i(amount_money_micros), i(credits_now), oi(transaction_id), i(now)],
        )
        .await?;
        db.execute(
            "UPDATE payments SET reversed_amount_micros = ?2, reversed_credits_micros = ?3, updated_at = ?4 WHERE id = ?1",
            &[t(payment_id), i(reversed_after_money_micros), i(credits_target), i(now)],
        )
        .await?;
        workspace::mark_exhausted_if_empty(db, &ws.id, now).await?;
        Ok(credits_now)
    })
    .await
}

/// The saved card shown in the summary (R10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// Stripe PaymentMethod id.
    #[serde(skip_serializing)]
    pub id: String,
    /// Card brand.
    pub brand: String,
    /// Last 4 digits.
    pub last4: String,
    /// Expiry month.
    pub exp_month: i64,
    /// Expiry year.
    pub exp_year: i64,
}

/// Saves the workspace's default card.
pub async fn set_payment_method<S: Storage>(
    db: &S,
    workspace_id: &str,
    method: &PaymentMethod,
) -> Result<()> {
    let rows = db
        .query(
            "UPDATE workspaces SET payment_method_id = ?2, card_brand = ?3, card_last4 = ?4, card_exp_month = ?5,
                 card_exp_year = ?6 WHERE id = ?1 RETURNING id",
            &[t(workspace_id), t(&method.id), t(&method.brand), t(&method.last4), i(method.exp_month), i(method.exp_year)],
        )
        .await?;
    if rows.is_empty() {
        return Err(LedgerError::NotFound { what: "workspace" });
    }
    Ok(())
}

/// Forgets a card that was detached; if it was the saved one, auto-recharge turns off with a
/// warning (R11). Returns whether it was the saved card.
pub async fn remove_payment_method<S: Storage>(db: &S, payment_method_id: &str) -> Result<bool> {
    let rows = db
        .query(
            "UPDATE workspaces SET payment_method_id = NULL, card_brand = NULL, card_last4 = NULL,
                 card_exp_month = NULL, card_exp_year = NULL,
                 auto_recharge_warning = CASE WHEN auto_recharge_enabled = 1
                     THEN 'Auto-recharge was turned off because the saved card was removed.' ELSE auto_recharge_warning END,
                 auto_recharge_enabled = 0
             WHERE payment_method_id = ?1 RETURNING id",
            &[t(payment_method_id)],
        )
        .await?;
    Ok(!rows.is_empty())
}

/// `PUT /v1/workspaces/{ws}/auto-recharge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRechargeSettings {
    /// On or off.
    pub enabled: bool,
    /// Recharge when the wallet's value falls below this (currency).
    pub threshold: Decimal,
    /// Amount charged each time (currency).
    pub amount: Decimal,
    /// The most automatic recharges may charge per calendar month of the workspace's time zone
    /// (currency); absent or null: no cap.
    #[serde(default)]
    pub max_per_month: Option<Decimal>,
}

/// Saves auto-recharge settings (R11): enabling needs a saved payment method; the amount obeys
/// the top-up bounds; a monthly cap is above zero and fits at least one recharge.
pub async fn set_auto_recharge<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    settings: &AutoRechargeSettings,
) -> Result<AutoRechargeSettings> {
    let threshold_money_micros = money::decimal_to_micros("threshold", settings.threshold, true)?;
    let amount_money_micros = money::decimal_to_micros("amount", settings.amount, false)?;
    check_charge_bounds(catalog, amount_money_micros)?;
    let max_per_month_money_micros = settings
        .max_per_month
        .map(|cap| monthly_cap_money_micros(cap, amount_money_micros))
        .transpose()?;
    let threshold_credits =
        money::credits_for_money(threshold_money_micros, catalog.credit_price_money_micros);
    tx::immediate(db, async |db| {
        let ws = workspace::get(db, workspace_id).await?;
        if settings.enabled && ws.payment_method_id.is_none() {
            return Err(LedgerError::PaymentMethodRequired);
        }
        // A new cap re-arms its alerts: the levels told were levels of the old one.
        db.execute(
            "UPDATE workspaces SET auto_recharge_enabled = ?2, auto_recharge_threshold_micros = ?3,
                 auto_recharge_threshold_credits_micros = ?4, auto_recharge_amount_micros = ?5,
                 auto_recharge_warning = NULL, auto_recharge_armed = ?2,
                 auto_recharge_cap_alerted = CASE WHEN auto_recharge_max_per_month_micros IS ?6
                     THEN auto_recharge_cap_alerted END,
                 auto_recharge_max_per_month_micros = ?6
             WHERE id = ?1",
            &[
                t(&ws.id),
                i(i64::from(settings.enabled)),
                i(threshold_money_micros),
                i(threshold_credits),
                i(amount_money_micros),
                oi(max_per_month_money_micros),
            ],
        )
        .await?;
        Ok(settings.clone())
    })
    .await
}

/// A monthly cap as given (R11), in micro-units of the currency: above zero, and at least one
/// recharge of `amount_money_micros` (a smaller cap could never let one through).
fn monthly_cap_money_micros(cap: Decimal, amount_money_micros: i64) -> Result<i64> {
    const FIELD: &str = "max_per_month";
    if cap <= Decimal::ZERO {
        return Err(LedgerError::invalid(
            "validation_error",
            FIELD,
            "max_per_month must be greater than zero",
        ));
    }
    let cap_money_micros = money::decimal_to_micros(FIELD, cap, false)?;
    if cap_money_micros < amount_money_micros {
        return Err(LedgerError::invalid(
            "validation_error",
            FIELD,
            "max_per_month must be at least the recharge amount",
        ));
    }
    Ok(cap_money_micros)
}

/// Decides whether a workspace needs an automatic charge now and, if so, records it pending and
/// returns it for the caller to charge off-session (R11): only when enabled with a card, armed
/// (one charge per crossing), under the threshold counting pending recharges, none in flight (a
/// UNIQUE index refuses a second), within the monthly cap and under the daily cap (else it pauses
/// with a warning). A charge that brings the month to 80%, 90% or 100% of the cap tells the
/// platform (`auto_recharge.cap_warning`).
pub async fn claim_auto_recharge<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    real_now_secs: i64,
) -> Result<Option<Payment>> {
    let max_per_day = i64::from(catalog.settings().auto_recharge_max_per_day);
    tx::immediate(db, async |db| {
        let ws = workspace::get(db, workspace_id).await?;
        let now = ws.now(real_now_secs);
        if !ws.auto_recharge_enabled || ws.payment_method_id.is_none() {
            return Ok(None);
        }
        let month = calendar::local_month(now, &ws.timezone)?;
        // The month's money counts what was charged or is being charged: a failed charge took
        // nothing.
        let rows = db
            .query(
                "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN credits_micros END), 0),
                        COUNT(CASE WHEN created_at > ?2 THEN 1 END),
                        COUNT(*),
                        COALESCE(SUM(CASE WHEN created_at >= ?3 AND created_at < ?4
                                           AND status IN ('pending', 'succeeded')
                                      THEN amount_micros END), 0)
                 FROM payments WHERE workspace_id = ?1 AND kind = 'auto_recharge'",
                &[
                    t(&ws.id),
                    i(now - SECS_PER_DAY),
                    i(month.start_secs),
                    i(month.end_secs),
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or(LedgerError::NotFound { what: "workspace" })?;
        let (pending_credits, charges_last_day, charges_total, month_money_micros) =
            (int(row, 0)?, int(row, 1)?, int(row, 2)?, int(row, 3)?);
        let armed = db
            .query(
                "SELECT auto_recharge_armed FROM workspaces WHERE id = ?1",
                &[t(&ws.id)],
            )
            .await?;
        let armed = armed.first().map(|r| int(r, 0)).transpose()?.unwrap_or(0) == 1;
        // Grants that pay for everything and last beyond the expiring window count as the
        // wallet does (docs/grants.md, G5): one about to expire, or one for some usage only,
        // never holds back a recharge the customer needs.
        let grants_covering = crate::grants::covering_recharge(db, catalog, &ws, now).await?;
        let wallet_effective =
            ws.wallet_micros - ws.held_wallet_micros + pending_credits + grants_covering;
        if !armed
            || pending_credits > 0
            || wallet_effective >= ws.auto_recharge_threshold_credits_micros
        {
            return Ok(None);
        }
        let amount_money_micros = ws.auto_recharge_amount_money_micros;
        let after_money_micros = month_money_micros + amount_money_micros;
        // The monthly cap first: while it refuses, the daily one has nothing to add, and it is
        // the one that says when charging resumes.
        if let Some(cap_money_micros) = ws.auto_recharge_max_per_month_money_micros
            && after_money_micros > cap_money_micros
        {
            let currency = &ws.currency;
            let warning = format!(
                "Auto-recharge paused until next month: another charge of {} {currency} would pass \
                 the monthly cap of {} {currency} (monthly_cap_reached).",
                money::to_decimal(amount_money_micros),
                money::to_decimal(cap_money_micros),
            );
            let facts = serde_json::json!({
                "max_per_month_micros": cap_money_micros,
                "spent_this_month_micros": month_money_micros,
            });
            let reached = CapReached {
                failure_code: "monthly_cap_reached",
                warning,
                facts,
            };
            pause_at_cap(db, catalog, &ws, reached, now, real_now_secs).await?;
            return Ok(None);
        }
        if charges_last_day >= max_per_day {
            let warning = format!(
                "Auto-recharge paused: {max_per_day} automatic charges in the last 24 hours ({}).",
                LimitKind::AutoRechargeMaxPerDay.as_str()
            );
            let reached = CapReached {
                failure_code: "daily_cap_reached",
                warning,
                facts: serde_json::json!({}),
            };
            pause_at_cap(db, catalog, &ws, reached, now, real_now_secs).await?;
            return Ok(None);
        }
        let payment_id = format!("ar_{}_{}", ws.id, charges_total + 1);
        let credits =
            money::credits_for_money(amount_money_micros, catalog.credit_price_money_micros);
        let payment = insert_pending(
            db,
            &ws,
            &payment_id,
            PaymentKind::AutoRecharge,
            (
                amount_money_micros,
                credits,
                catalog.credit_price_money_micros,
            ),
            now,
        )
        .await?;
        db.execute(
            "UPDATE workspaces SET auto_recharge_armed = 0 WHERE id = ?1",
            &[t(&ws.id)],
        )
        .await?;
        if let Some(cap_money_micros) = ws.auto_recharge_max_per_month_money_micros {
            let spent = (after_money_micros, cap_money_micros);
            alert_cap_level(db, &ws, &month, spent, now, real_now_secs).await?;
        }
        Ok(Some(payment))
    })
    .await
}

/// A cap that refused an automatic charge: the product code, the warning shown on the billing
/// page, and the facts the `auto_recharge.failed` event adds to the charge's.
struct CapReached {
    failure_code: &'static str,
    warning: String,
    facts: serde_json::Value,
}

/// Pauses auto-recharge at a cap (R11): the first sweep that finds the cap reached sets the
/// warning and tells the platform (`auto_recharge.failed`); later sweeps find the same warning and
/// stay silent (one event per crossing). The warning clears when a recharge succeeds (the first
/// one the cap lets through again) or the settings are saved.
async fn pause_at_cap<S: Storage>(
    db: &S,
    catalog: &Catalog,
    ws: &WorkspaceState,
    reached: CapReached,
    now: i64,
    real_now_secs: i64,
) -> Result<()> {
    let newly = db
        .query(
            "UPDATE workspaces SET auto_recharge_warning = ?2
             WHERE id = ?1 AND auto_recharge_warning IS NOT ?2 RETURNING id",
            &[t(&ws.id), t(&reached.warning)],
        )
        .await?;
    if newly.is_empty() {
        return Ok(());
    }
    let amount_money_micros = ws.auto_recharge_amount_money_micros;
    let mut facts = serde_json::json!({
        "failure_code": reached.failure_code, "failure_message": reached.warning,
        "amount_micros": amount_money_micros,
        "credits_micros": money::credits_for_money(amount_money_micros, catalog.credit_price_money_micros),
    });
    if let (Some(all), serde_json::Value::Object(extra)) = (facts.as_object_mut(), reached.facts) {
        all.extend(extra);
    }
    crate::notifications::record(
        db,
        &ws.id,
        "auto_recharge.failed",
        &facts,
        now,
        real_now_secs,
    )
    .await
}

/// The levels of the monthly cap the platform hears of, highest first (percent of the cap).
const CAP_ALERT_PERCENTS: [i64; 3] = [100, 90, 80];

/// Tells the platform when a claimed recharge brings the month's automatic charges
/// (`spent_money_micros`, this one included) to or past 80%, 90% or 100% of the cap
/// (`auto_recharge.cap_warning`, with the highest level reached): once per level and month, by
/// one guarded update of the last level told (schema V18).
async fn alert_cap_level<S: Storage>(
    db: &S,
    ws: &WorkspaceState,
    month: &calendar::LocalMonth,
    (spent_money_micros, cap_money_micros): (i64, i64),
    now: i64,
    real_now_secs: i64,
) -> Result<()> {
    let reached = CAP_ALERT_PERCENTS.into_iter().find(|percent| {
        i128::from(spent_money_micros) * 100 >= i128::from(cap_money_micros) * i128::from(*percent)
    });
    let Some(percent) = reached else {
        return Ok(());
    };
    let alerted = format!("{}:{percent:03}", month.label);
    let newly = db
        .query(
            "UPDATE workspaces SET auto_recharge_cap_alerted = ?2
             WHERE id = ?1 AND (auto_recharge_cap_alerted IS NULL OR auto_recharge_cap_alerted < ?2)
             RETURNING id",
            &[t(&ws.id), t(&alerted)],
        )
        .await?;
    if newly.is_empty() {
        return Ok(());
    }
    crate::notifications::record(
        db,
        &ws.id,
        "auto_recharge.cap_warning",
        &serde_json::json!({
            "percent": percent,
            "spent_this_month_micros": spent_money_micros,
            "max_per_month_micros": cap_money_micros,
            "month": month.label,
        }),
        now,
        real_now_secs,
    )
    .await
}

/// Workspaces the auto-recharge sweep should look at, in id order after `after_id`.
pub async fn auto_recharge_candidates<S: Storage>(
    db: &S,
    after_id: &str,
    limit: i64,
) -> Result<Vec<String>> {
    let rows = db
        .query(
            "SELECT id FROM workspaces
             WHERE auto_recharge_enabled = 1 AND auto_recharge_armed = 1 AND id > ?1
               AND wallet_micros - held_wallet_micros < auto_recharge_threshold_credits_micros
             ORDER BY id LIMIT ?2",
            &[t(after_id), i(limit.clamp(1, 1_000))],
        )
        .await?;
    rows.iter().map(|r| text(r, 0)).collect()
}

/// Payments still pending [`RECONCILE_AFTER_SECS`] after they were last looked at, oldest first
/// (R21), each on its workspace's clock: a payment is stamped with its workspace's time (its test
/// clock, if set), so it is measured against that time too, as every other sweep is; the real
/// clock would reconcile a frozen workspace's payments at once, or never until real time caught
/// up with a clock set ahead (found by the simulator).
pub async fn stale_pending<S: Storage>(
    db: &S,
    real_now_secs: i64,
    limit: i64,
) -> Result<Vec<Payment>> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'pending'
           AND updated_at <= COALESCE((SELECT test_clock_at FROM workspaces w
                                       WHERE w.id = payments.workspace_id), ?1) - ?3
         ORDER BY updated_at LIMIT ?2"
    );
    let rows = db
        .query(
            &sql,
            &[
                i(real_now_secs),
                i(limit.clamp(1, 1_000)),
                i(RECONCILE_AFTER_SECS),
            ],
        )
        .await?;
    rows.iter().map(payment_from_row).collect()
}
