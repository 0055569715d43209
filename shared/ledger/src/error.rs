//! The ledger's one error type. Each variant is a refusal or failure the billing rules name,
//! with the contract's snake_case code ([`LedgerError::code`]): the codes are part of the domain
//! (R3 `billing_not_configured`, R7 `insufficient_funds`, R9's card codes, R11
//! `payment_method_required`, ...), and clients branch on them. Which HTTP status answers each is
//! not the ledger's business: `spin_adapter`'s error module maps variants to statuses.

use crate::storage::StorageError;

/// Which per-agent or per-workspace limit refused an action (R6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// The agent's monthly spending limit for the current cycle.
    MonthlySpendLimit,
    /// The agent's daily call limit (resets at midnight in the workspace time zone).
    DailyCallLimit,
    /// The agent's simultaneous call limit.
    MaxConcurrentCalls,
    /// The automatic-charge runaway guard (R11).
    AutoRechargeMaxPerDay,
}

impl LimitKind {
    /// The contract's snake_case name of this limit.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MonthlySpendLimit => "monthly_spend_limit",
            Self::DailyCallLimit => "daily_call_limit",
            Self::MaxConcurrentCalls => "max_concurrent_calls",
            Self::AutoRechargeMaxPerDay => "auto_recharge_max_per_day",
        }
    }
}

/// Everything a ledger operation can refuse or fail with. Every variant but `Storage` and
/// `CatalogChanged` ([`LedgerError::is_failure`]) is the caller's to fix; none has written
/// anything.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    /// Malformed (`code` `malformed_request`) or out-of-range input.
    #[error("{message}")]
    Invalid {
        /// Contract code, e.g. `invalid_amount`, `invalid_phone_number`, `validation_error`.
        code: &'static str,
        /// Human sentence.
        message: String,
        /// The offending field, when there is one.
        field: Option<&'static str>,
    },
    /// A workspace, plan, call, top-up or other object does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up, e.g. "workspace".
        what: &'static str,
    },
    /// R3: no plan, so nothing billable is allowed.
    #[error(
        "Billing not configured: select a plan and set up a payment method to use this feature."
    )]
    BillingNotConfigured,
    /// R6/R7: the action costs more than the agent may spend.
    #[error("Insufficient funds in your account")]
    InsufficientFunds,
    /// R6: a `stop` agent with no plan credits left.
    #[error(
        "Plan credits exhausted: this agent stops until the cycle renews or credits are added."
    )]
    PlanCreditsExhausted,
    /// R6: a per-agent limit refused the action.
    #[error("{} reached", .limit.as_str())]
    LimitReached {
        /// Which limit.
        limit: LimitKind,
    },
    /// R11: auto-recharge needs a saved card.
    #[error("Payment method must be configured before enabling auto-recharge.")]
    PaymentMethodRequired,
    /// R9: a top-up below the currency's minimum.
    #[error("The amount is below the minimum top-up of {minimum} {currency}.")]
    AmountBelowMinimum {
        /// Minimum, in currency.
        minimum: rust_decimal::Decimal,
        /// ISO currency code.
        currency: String,
    },
    /// R9: a top-up above the currency's maximum.
    #[error("The amount is above the maximum top-up of {maximum} {currency}.")]
    AmountAboveMaximum {
        /// Maximum, in currency.
        maximum: rust_decimal::Decimal,
        /// ISO currency code.
        currency: String,
    },
    /// The same idempotency id was used for a different request.
    #[error("This id was already used for a different request.")]
    IdempotencyConflict,
    /// The object is in a state that does not allow the operation (e.g. ending an ended call).
    #[error("{message}")]
    Conflict {
        /// Contract code, e.g. `call_not_active`.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// Payments cannot be taken now: Stripe is not configured, or the plan has no Stripe price.
    /// Nothing was written and nothing was sent to Stripe.
    #[error("{message}")]
    PaymentsUnavailable {
        /// Human sentence.
        message: &'static str,
    },
    /// The catalog the operation was priced with is no longer the stored one (a new version was
    /// put meanwhile); nothing was written. The caller reloads the catalog and runs it again.
    #[error("The price catalog changed while this request ran; retry it.")]
    CatalogChanged,
    /// The database failed (not the caller's fault); nothing was committed.
    #[error("storage failure: {0}")]
    Storage(#[from] StorageError),
}

impl LedgerError {
    /// Builds a validation error for `field`.
    pub fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
            field: Some(field),
        }
    }

    /// Payments refused because Stripe is not configured (no secret key).
    pub fn payments_not_configured() -> Self {
        Self::PaymentsUnavailable {
            message: "Payments are not configured yet.",
        }
    }

    /// Whether this is a failure of the operation rather than a refusal of the request: the
    /// database failed, or the catalog changed under it. A batch stops whole on one.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Storage(_) | Self::CatalogChanged)
    }

    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { code, .. } | Self::Conflict { code, .. } => code,
            Self::NotFound { .. } => "not_found",
            Self::BillingNotConfigured => "billing_not_configured",
            Self::InsufficientFunds => "insufficient_funds",
            Self::PlanCreditsExhausted => "plan_credits_exhausted",
            Self::LimitReached { .. } => "limit_reached",
            Self::PaymentMethodRequired => "payment_method_required",
            Self::AmountBelowMinimum { .. } => "amount_below_minimum",
            Self::AmountAboveMaximum { .. } => "amount_above_maximum",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::PaymentsUnavailable { .. } => "payment_processing_error",
            Self::CatalogChanged | Self::Storage(_) => "internal_error",
        }
    }

    /// Extra fields for the error body (`{"error": {"code", "message", ...details}}`).
    pub fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut details = serde_json::Map::new();
        match self {
            Self::Invalid {
                field: Some(field), ..
            } => {
                details.insert("field".into(), (*field).into());
            }
            Self::LimitReached { limit } => {
                details.insert("limit".into(), limit.as_str().into());
            }
            Self::NotFound { what } => {
                details.insert("resource".into(), (*what).into());
            }
            _ => {}
        }
        details
    }
}

/// The ledger's result type.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
