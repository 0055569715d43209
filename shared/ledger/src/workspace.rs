//! Workspaces: provisioning, the state every operation reads, and test clocks.

use std::sync::LazyLock;

use serde::Deserialize;

use crate::calendar;
use crate::catalog::Catalog;
use crate::row::{self, i, read_row, t};
use crate::storage::Storage;
use crate::{LedgerError, Result};

/// Input of `PUT /v1/workspaces/{ws}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceInput {
    /// Display name.
    pub name: String,
    /// Billing e-mail.
    pub email: String,
    /// ISO 4217 currency; the catalog's currency when omitted.
    #[serde(default)]
    pub currency: Option<String>,
    /// IANA time zone for daily limits; UTC when omitted.
    #[serde(default)]
    pub timezone: Option<String>,
}

read_row! {
/// Everything the ledger knows about one workspace, read in one statement. Its fields are the
/// columns of `workspaces` it reads, in the order it reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceState in "workspaces" {
    /// Workspace id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Billing e-mail.
    pub email: String,
    /// Currency.
    pub currency: String,
    /// IANA time zone.
    pub timezone: String,
    /// Current plan; `None` means billing is not configured (R3).
    pub plan_id: Option<String>,
    /// The current cycle's plan credits.
    pub plan_monthly_credits_micros: i64,
    /// The current plan's rollover cap.
    pub plan_rollover_max_micros: Option<i64>,
    /// Cycle anchor day (1-31).
    pub cycle_anchor_day: Option<i64>,
    /// Current cycle start (midnight UTC).
    pub cycle_start_at: Option<i64>,
    /// Current cycle end (exclusive).
    pub cycle_end_at: Option<i64>,
    /// Whether this cycle's plan credits were granted.
    pub cycle_credits_granted: bool,
    /// A downgrade waiting for the next cycle (R15).
    pub pending_plan_id: Option<String>,
    /// `none`, `active`, `past_due` or `canceled`.
    pub subscription_status: String,
    /// Stripe customer.
    pub stripe_customer_id: Option<String>,
    /// Stripe subscription (`sub_...`), once started: one being created is claimed in columns of
    /// its own (`plans::claim_subscription`).
    pub stripe_subscription_id: Option<String>,
    /// Plan-credit balance.
    pub plan_credits_micros: i64,
    /// Wallet balance (may be negative after grace calls or refunds).
    pub wallet_micros: i64,
    /// Plan credits reserved by calls in progress.
    pub held_plan_micros: i64,
    /// Wallet credits reserved by calls in progress.
    pub held_wallet_micros: i64,
    /// When the balance ran out (R7).
    pub exhausted_at: Option<i64>,
    /// Saved payment method.
    pub payment_method_id: Option<String>,
    /// Card brand.
    pub card_brand: Option<String>,
    /// Card last 4.
    pub card_last4: Option<String>,
    /// Card expiry month.
    pub card_exp_month: Option<i64>,
    /// Card expiry year.
    pub card_exp_year: Option<i64>,
    /// Auto-recharge on.
    pub auto_recharge_enabled: bool,
    /// The threshold as the customer set it: money, in micro-units of the catalog's currency
    /// (column `auto_recharge_threshold_micros`, named before the `_money_micros` rule).
    pub auto_recharge_threshold_money_micros: i64 = row::Column("auto_recharge_threshold_micros"),
    /// The same threshold in micro-credits (converted at the credit price when it was set): what
    /// the wallet is compared with.
    pub auto_recharge_threshold_credits_micros: i64,
    /// The amount each recharge charges: money, in micro-units of the catalog's currency (column
    /// `auto_recharge_amount_micros`, named before the `_money_micros` rule).
    pub auto_recharge_amount_money_micros: i64 = row::Column("auto_recharge_amount_micros"),
    /// The most automatic recharges may charge per calendar month of the workspace's time zone:
    /// money, in micro-units of the catalog's currency (column
    /// `auto_recharge_max_per_month_micros`); `None` is no cap.
    pub auto_recharge_max_per_month_money_micros: Option<i64> =
        row::Column("auto_recharge_max_per_month_micros"),
    /// Why auto-recharge stopped, if it did.
    pub auto_recharge_warning: Option<String>,
    /// Frozen test-clock time.
    pub test_clock_at: Option<i64>,
}
}

impl WorkspaceState {
    /// Plan credits not reserved by holds.
    pub fn plan_available_micros(&self) -> i64 {
        (self.plan_credits_micros - self.held_plan_micros).max(0)
    }

    /// Wallet credits not reserved by holds (never below zero).
    pub fn wallet_available_micros(&self) -> i64 {
        (self.wallet_micros - self.held_wallet_micros).max(0)
    }

    /// Credits reserved by calls in progress.
    pub fn held_micros(&self) -> i64 {
        self.held_plan_micros + self.held_wallet_micros
    }

    /// The time this workspace's logic runs at: its test clock if set, else the real time.
    pub fn now(&self, real_now_secs: i64) -> i64 {
        self.test_clock_at.unwrap_or(real_now_secs)
    }

    /// The card on file, with its details (R10).
    pub fn saved_card(&self) -> Option<crate::payments::PaymentMethod> {
        match (
            &self.payment_method_id,
            &self.card_brand,
            &self.card_last4,
            self.card_exp_month,
            self.card_exp_year,
        ) {
            (Some(id), Some(brand), Some(last4), Some(exp_month), Some(exp_year)) => {
                Some(crate::payments::PaymentMethod {
                    id: id.clone(),
                    brand: brand.clone(),
                    last4: last4.clone(),
                    exp_month,
                    exp_year,
                })
            }
            _ => None,
        }
    }
}

/// [`WorkspaceState`]'s columns, unqualified: for a read of `workspaces` alone and `RETURNING`.
static WORKSPACE_COLUMNS: LazyLock<String> =
    LazyLock::new(|| row::select_list::<WorkspaceState>(false));

/// Decodes a row that selected [`WORKSPACE_COLUMNS`].
fn from_row(r: &crate::Row) -> Result<WorkspaceState> {
    row::decode_row(r)
}

/// Validates an id from a path or body (workspace, agent, call, event ids).
pub fn validate_id(field: &'static str, id: &str) -> Result<()> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(LedgerError::invalid(
            "validation_error",
            field,
            format!("{field} must be 1-128 letters, digits, '_', '-', '.' or ':'"),
        ))
    }
}

/// Reads a workspace, or 404.
pub async fn get<S: Storage>(db: &S, workspace_id: &str) -> Result<WorkspaceState> {
    let sql = format!(
        "SELECT {} FROM workspaces WHERE id = ?1",
        *WORKSPACE_COLUMNS
    );
    let rows = db.query(&sql, &[t(workspace_id)]).await?;
    rows.first()
        .map_or(Err(LedgerError::NotFound { what: "workspace" }), from_row)
}

/// Creates or updates a workspace (service call). Balances are untouched by an update.
pub async fn upsert<S: Storage>(
    db: &S,
    catalog: &Catalog,
    workspace_id: &str,
    input: &WorkspaceInput,
    real_now_secs: i64,
) -> Result<WorkspaceState> {
    validate_id("workspace_id", workspace_id)?;
    let name = input.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(LedgerError::invalid(
            "validation_error",
            "name",
            "name must be 1-200 characters",
        ));
    }
    let email = input.email.trim();
    if email.len() > 254 || email.split('@').filter(|part| !part.is_empty()).count() != 2 {
        return Err(LedgerError::invalid(
            "validation_error",
            "email",
            "email must be an e-mail address",
        ));
    }
    let currency = input
        .currency
        .as_deref()
        .unwrap_or(&catalog.settings().currency);
    if currency != catalog.settings().currency {
        return Err(LedgerError::invalid(
            "unsupported_currency",
            "currency",
            format!("Only {} is supported.", catalog.settings().currency),
        ));
    }
    let timezone = input.timezone.as_deref().unwrap_or("UTC");
    calendar::validate_timezone(timezone)?;
    let sql = format!(
        "INSERT INTO workspaces (id, name, email, currency, timezone, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
             timezone = excluded.timezone
         RETURNING {}",
        *WORKSPACE_COLUMNS
    );
    let rows = db
        .query(
            &sql,
            &[
                t(workspace_id),
                t(name),
                t(email),
                t(currency),
                t(timezone),
                i(real_now_secs),
            ],
        )
        .await?;
    rows.first()
        .map_or(Err(LedgerError::NotFound { what: "workspace" }), from_row)
}

/// Sets a workspace's test clock (forward only). Only callable when test clocks are enabled.
pub async fn set_test_clock<S: Storage>(
    db: &S,
    workspace_id: &str,
    frozen_secs: i64,
    real_now_secs: i64,
) -> Result<WorkspaceState> {
    let state = get(db, workspace_id).await?;
    if frozen_secs < state.now(real_now_secs) {
        return Err(LedgerError::invalid(
            "validation_error",
            "frozen_time",
            "A test clock only moves forward.",
        ));
    }
    let sql = format!(
        "UPDATE workspaces SET test_clock_at = ?2 WHERE id = ?1 RETURNING {}",
        *WORKSPACE_COLUMNS
    );
    let rows = db.query(&sql, &[t(workspace_id), i(frozen_secs)]).await?;
    rows.first()
        .map_or(Err(LedgerError::NotFound { what: "workspace" }), from_row)
}

/// Records when the balance ran out (R7): after a debit or hold, if nothing is available any more,
/// the grace period starts now (unless it already started).
pub(crate) async fn mark_exhausted_if_empty<S: Storage>(
    db: &S,
    workspace_id: &str,
    now_secs: i64,
) -> Result<()> {
    db.execute(
        concat!(
            "UPDATE workspaces SET exhausted_at = ?2
         WHERE id = ?1 AND exhausted_at IS NULL
           AND plan_credits_micros - held_plan_micros <= 0 AND wallet_micros - held_wallet_micros <= 0
           AND NOT EXISTS (",
            crate::schema::grant_keeps_calls_going!("?1", "?2"),
            ")"
        ),
        &[t(workspace_id), i(now_secs)],
    )
    .await?;
    Ok(())
}

/// After a grant is given: the balance is restored if a grant now pays for calls (R7; a grant
/// that does keeps the workspace from having run out, docs/grants.md G4).
pub(crate) async fn after_grant<S: Storage>(
    db: &S,
    workspace_id: &str,
    now_secs: i64,
) -> Result<()> {
    db.execute(
        concat!(
            "UPDATE workspaces SET exhausted_at = NULL
             WHERE id = ?1 AND exhausted_at IS NOT NULL AND EXISTS (",
            crate::schema::grant_keeps_calls_going!("?1", "?2"),
            ")"
        ),
        &[t(workspace_id), i(now_secs)],
    )
    .await?;
    Ok(())
}

/// After credit arrives: the balance is restored if anything is available (R7), and
/// auto-recharge re-arms once the wallet is back at or above its threshold (R11).
pub(crate) async fn after_credit<S: Storage>(db: &S, workspace_id: &str) -> Result<()> {
    db.execute(
        "UPDATE workspaces SET
             exhausted_at = CASE WHEN plan_credits_micros - held_plan_micros > 0
                                   OR wallet_micros - held_wallet_micros > 0 THEN NULL ELSE exhausted_at END,
             auto_recharge_armed = CASE WHEN wallet_micros - held_wallet_micros >= auto_recharge_threshold_credits_micros
                                        THEN 1 ELSE auto_recharge_armed END
         WHERE id = ?1",
        &[t(workspace_id)],
    )
    .await?;
    Ok(())
}

/// Records the workspace's Stripe customer (once created, it stays the same).
pub async fn set_stripe_customer<S: Storage>(
    db: &S,
    workspace_id: &str,
    customer_id: &str,
) -> Result<()> {
    let rows = db
        .query(
            "UPDATE workspaces SET stripe_customer_id = ?2
             WHERE id = ?1 AND (stripe_customer_id IS NULL OR stripe_customer_id = ?2) RETURNING id",
            &[t(workspace_id), t(customer_id)],
        )
        .await?;
    if rows.is_empty() {
        get(db, workspace_id).await?;
        return Err(LedgerError::Conflict {
            code: "customer_mismatch",
            message: "This workspace already has another Stripe customer.".into(),
        });
    }
    Ok(())
}

/// Records the workspace's Stripe subscription (`None` clears it).
pub async fn set_stripe_subscription<S: Storage>(
    db: &S,
    workspace_id: &str,
    subscription_id: Option<&str>,
) -> Result<()> {
    let rows = db
        .query(
            "UPDATE workspaces SET stripe_subscription_id = ?2 WHERE id = ?1 RETURNING id",
            &[
                t(workspace_id),
                subscription_id.map_or(crate::SqlValue::Null, t),
            ],
        )
        .await?;
    if rows.is_empty() {
        return Err(LedgerError::NotFound { what: "workspace" });
    }
    Ok(())
}

/// The workspace of a Stripe customer, if any.
pub async fn find_by_stripe_customer<S: Storage>(
    db: &S,
    customer_id: &str,
) -> Result<Option<String>> {
    find_text(
        db,
        "SELECT id FROM workspaces WHERE stripe_customer_id = ?1",
        customer_id,
    )
    .await
}

/// The workspace of a Stripe subscription, if any.
pub async fn find_by_stripe_subscription<S: Storage>(
    db: &S,
    subscription_id: &str,
) -> Result<Option<String>> {
    find_text(
        db,
        "SELECT id FROM workspaces WHERE stripe_subscription_id = ?1",
        subscription_id,
    )
    .await
}

/// The subscription Stripe's events must name to be about this workspace: the one it records or,
/// while a request holds a claim on creating one, that claim, which no event names (the new
/// subscription's events wait until `plans::start_subscription` records it, and an ended one's
/// id was cleared by the claim). `None` for neither, or no such workspace.
pub async fn subscription_or_claim<S: Storage>(
    db: &S,
    workspace_id: &str,
) -> Result<Option<String>> {
    find_text(
        db,
        "SELECT COALESCE(subscription_claim, stripe_subscription_id) FROM workspaces WHERE id = ?1",
        workspace_id,
    )
    .await
}

/// The text a one-parameter lookup returns, if any: no row, or a NULL, is none.
async fn find_text<S: Storage>(db: &S, sql: &str, key: &str) -> Result<Option<String>> {
    let rows = db.query(sql, &[t(key)]).await?;
    Ok(rows
        .first()
        .map(|row| row::opt_text(row, 0))
        .transpose()?
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_money_fields_read_their_columns_by_the_columns_names() {
        // Renamed in Rust only (`money.rs`, "Units"): the SQL, hot paths' reads included, still
        // names the columns, qualified as every other column of the row.
        let qualified = row::select_list::<WorkspaceState>(true);
        for column in [
            "workspaces.auto_recharge_threshold_micros",
            "workspaces.auto_recharge_threshold_credits_micros",
            "workspaces.auto_recharge_amount_micros",
            "workspaces.auto_recharge_max_per_month_micros",
        ] {
            assert!(
                qualified.split(", ").any(|c| c == column),
                "{column} in {qualified}"
            );
        }
        assert!(!qualified.contains("money"), "{qualified}");
        assert!(
            !WORKSPACE_COLUMNS.contains("money"),
            "{}",
            *WORKSPACE_COLUMNS
        );
    }
}
