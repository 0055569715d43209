//! The catalog: plans, the rate card and the settings (R1, R4), validated as a whole and
//! versioned in SQLite. A change applies to new debits; a subscribed plan's terms are copied onto
//! the workspace at each cycle start, so they change at the next cycle.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::calendar;
use crate::money;
use crate::row::{int, text};
use crate::storage::{SqlValue, Storage};
use crate::{LedgerError, Result};

/// The catalog that ships with the product, used until one is stored.
pub const DEFAULT_CATALOG_JSON: &str = include_str!("../catalog/default.json");

/// Upper bounds on a catalog (TigerStyle: a limit on everything).
pub const PLANS_MAX: usize = 100;
/// `runway.low` below this many days of balance, unless the catalog says otherwise.
pub const DEFAULT_RUNWAY_LOW_DAYS: u32 = 7;
/// `credits.expiring` goes this many days before a grant expires (docs/grants.md, G9), and a
/// grant expiring within them does not hold back an automatic recharge (G5).
pub const DEFAULT_CREDITS_EXPIRING_DAYS: u32 = 7;
/// Most extra `low_balance_levels` a catalog may set.
pub const BALANCE_LEVELS_MAX: usize = 10;
/// The most rate-card entries a catalog may have.
pub const RATES_MAX: usize = 10_000;

/// What is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageKind {
    /// A voice call, per started increment (default one minute).
    Call,
    /// A chat message sent or received.
    Message,
    /// An SMS, per segment.
    Sms,
    /// Speech-to-text, per minute.
    Stt,
    /// An AI task, per task.
    AiTask,
}

impl UsageKind {
    /// The snake_case name stored in SQLite and shown in history.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Message => "message",
            Self::Sms => "sms",
            Self::Stt => "stt",
            Self::AiTask => "ai_task",
        }
    }

    /// The unit one quantity counts.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Call | Self::Stt => "minute",
            Self::Message => "message",
            Self::Sms => "segment",
            Self::AiTask => "task",
        }
    }
}

/// Call or message direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Towards the workspace.
    Inbound,
    /// From the workspace.
    Outbound,
}

impl Direction {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// The type of a phone number, which selects rates and the inbound grace rule (R7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberType {
    /// A geographic or mobile number.
    Standard,
    /// A toll-free number (the callee pays).
    TollFree,
}

impl NumberType {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::TollFree => "toll_free",
        }
    }
}

/// R1: one credit costs one unit of currency unless the catalog says otherwise.
pub const DEFAULT_CREDIT_PRICE: Decimal = Decimal::ONE;
/// R7: inbound calls to standard numbers keep working 15 minutes at zero balance by default.
pub const DEFAULT_INBOUND_GRACE_SECS: u32 = 15 * 60;
/// R11: at most 5 automatic charges per rolling 24 h by default.
pub const DEFAULT_AUTO_RECHARGE_MAX_PER_DAY: u32 = 5;

/// Workspace-wide settings. A setting the rules give a default for may be omitted and takes it
/// (`credit_price` 1, `inbound_grace_secs` 900, `auto_recharge_max_per_day` 5); the others have
/// no default anyone could rely on and are required (`currency`, `topup_min`, `topup_max`,
/// `hold_timeout_secs`, `low_balance_threshold`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// ISO 4217 code, e.g. "USD": taken in any case ("usd", as Stripe writes it), stored and
    /// answered in upper case ([`currency_code`]).
    pub currency: String,
    /// Price of one credit in currency (R1: 1 by default, as CloudTalk).
    #[serde(default = "default_credit_price")]
    pub credit_price: Decimal,
    /// Smallest manual top-up, in currency.
    pub topup_min: Decimal,
    /// Largest manual top-up, in currency.
    pub topup_max: Decimal,
    /// R7: how long inbound calls to standard numbers keep working at zero balance (default
    /// 900: 15 minutes).
    #[serde(default = "default_inbound_grace_secs")]
    pub inbound_grace_secs: u32,
    /// R5: a hold not extended by a heartbeat for this long is posted at its reserved amount.
    pub hold_timeout_secs: u32,
    /// Below this many credits in total, the banner says `low_balance`; falling to it sends
    /// `balance.low` (docs/notifications.md).
    pub low_balance_threshold: Decimal,
    /// More levels, in credits, at which `balance.low` is sent as the balance falls (none by
    /// default; at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub low_balance_levels: Vec<Decimal>,
    /// `runway.low` is sent when the forecast says the balance lasts fewer than this many days
    /// (default 7; 0 sends none).
    #[serde(default = "default_runway_low_days")]
    pub runway_low_days: u32,
    /// R11 runaway guard: automatic charges per rolling 24 h (default 5).
    #[serde(default = "default_auto_recharge_max_per_day")]
    pub auto_recharge_max_per_day: u32,
    /// `credits.expiring` is sent this many days before a grant expires (default 7; 0 sends
    /// none); a grant that expires within them does not hold back an automatic recharge.
    #[serde(default = "default_credits_expiring_days")]
    pub credits_expiring_days: u32,
}

fn default_credits_expiring_days() -> u32 {
    DEFAULT_CREDITS_EXPIRING_DAYS
}

fn default_credit_price() -> Decimal {
    DEFAULT_CREDIT_PRICE
}

fn default_inbound_grace_secs() -> u32 {
    DEFAULT_INBOUND_GRACE_SECS
}

fn default_runway_low_days() -> u32 {
    DEFAULT_RUNWAY_LOW_DAYS
}

fn default_auto_recharge_max_per_day() -> u32 {
    DEFAULT_AUTO_RECHARGE_MAX_PER_DAY
}

/// A currency code as stored and answered: upper case, whatever case it was given in ("usd" is
/// how Stripe writes it). Validity is checked where it is taken (3 letters, the catalog's).
pub fn currency_code(text: &str) -> String {
    text.to_ascii_uppercase()
}

/// A plan (R13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Stable id, e.g. "basic".
    pub id: String,
    /// Display name.
    pub name: String,
    /// Monthly fee in currency (0 for a free plan).
    pub price: Decimal,
    /// Credits granted each cycle.
    pub monthly_credits: Decimal,
    /// If set, up to this many unused plan credits roll over into the next cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover_max_credits: Option<Decimal>,
    /// The Stripe price (or legacy plan) id of the fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_price_id: Option<String>,
}

/// One rate-card entry (R4). Unset selectors match anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// What it prices.
    pub kind: UsageKind,
    /// Only this direction, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Only numbers starting with this E.164 prefix, if set ("+1", "+44", "+1800").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only this number type, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_type: Option<NumberType>,
    /// Credits per unit (per minute for calls and speech-to-text).
    pub price: Decimal,
    /// Calls: billing increment (default 60: per started minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment_secs: Option<u32>,
    /// Calls: minimum billed duration (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_secs: Option<u32>,
}

/// The catalog document, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDoc {
    /// Settings.
    pub settings: Settings,
    /// Plans.
    pub plans: Vec<Plan>,
    /// Rate card.
    pub rates: Vec<Rate>,
}

/// A stored catalog and its version (0: the shipped default, never stored).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogVersion {
    /// Increases by one with every accepted change.
    pub version: i64,
    /// The document.
    #[serde(flatten)]
    pub doc: CatalogDoc,
}

/// A plan's terms in micro-units: its fee money, its credits micro-credits (`money.rs`, "Units").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanTerms {
    /// Plan id.
    pub id: String,
    /// Fee per cycle: money, in micro-units of the currency.
    pub price_money_micros: i64,
    /// Micro-credits per cycle.
    pub monthly_credits_micros: i64,
    /// Rollover cap, if the plan rolls over.
    pub rollover_max_micros: Option<i64>,
}

/// How one call is priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRate {
    /// Credits per minute, in micros.
    pub per_minute_micros: i64,
    /// Billing increment.
    pub increment_secs: i64,
    /// Minimum billed duration.
    pub minimum_secs: i64,
    /// The callee number's type.
    pub number_type: NumberType,
}

impl CallRate {
    /// Seconds billed for a call of `duration_secs` (per started increment, at least the minimum;
    /// a call of zero seconds bills nothing).
    pub fn billed_secs(&self, duration_secs: i64) -> i64 {
        if duration_secs <= 0 {
            return 0;
        }
        let increments = (duration_secs + self.increment_secs - 1) / self.increment_secs;
        (increments * self.increment_secs).max(self.minimum_secs)
    }

    /// The charge for `billed_secs`: `per_minute x secs / 60`, rounded up to the micro-credit.
    pub fn charge_for_secs(&self, billed_secs: i64) -> i64 {
        money::fraction_ceil(self.per_minute_micros, billed_secs, 60)
    }
}

/// A validated catalog with its amounts in micro-units: what the ledger rates with.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    /// Version it was loaded from.
    pub version: i64,
    /// The document.
    pub doc: CatalogDoc,
    /// Price of one credit: money, in micro-units of the currency.
    pub credit_price_money_micros: i64,
    /// Smallest card charge (top-up or recharge amount): money, in micro-units of the currency.
    pub topup_min_money_micros: i64,
    /// Largest card charge: money, in micro-units of the currency.
    pub topup_max_money_micros: i64,
    /// Banner threshold, micro-credits.
    pub low_balance_threshold_micros: i64,
    /// Every level `balance.low` is sent at: the threshold and the extra levels, credit micros,
    /// ascending, without duplicates.
    pub balance_levels_micros: Vec<i64>,
    plans: Vec<PlanTerms>,
    rates: Vec<RateTerms>,
}

#[derive(Debug, Clone, PartialEq)]
struct RateTerms {
    kind: UsageKind,
    direction: Option<Direction>,
    prefix: String,
    number_type: Option<NumberType>,
    /// Micro-credits per unit of usage (per minute for calls): a rate's price is in credits.
    price_micros: i64,
    increment_secs: i64,
    minimum_secs: i64,
}

impl Catalog {
    /// Validates a document as a whole; any problem is a 422 naming the field. The currency is
    /// normalized to upper case.
    pub fn validate(version: i64, mut doc: CatalogDoc) -> Result<Self> {
        doc.settings.currency = currency_code(&doc.settings.currency);
        let s = &doc.settings;
        if s.currency.len() != 3 || !s.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                "settings.currency",
                "currency must be an ISO 4217 code such as USD",
            ));
        }
        let credit_price_money_micros =
            money::decimal_to_micros("settings.credit_price", s.credit_price, false)?;
        let topup_min_money_micros =
            money::decimal_to_micros("settings.topup_min", s.topup_min, false)?;
        let topup_max_money_micros =
            money::decimal_to_micros("settings.topup_max", s.topup_max, false)?;
        if topup_max_money_micros < topup_min_money_micros {
            return Err(invalid(
                "settings.topup_max",
                "topup_max must not be below topup_min",
            ));
        }
        let low_balance_threshold_micros = money::decimal_to_micros(
            "settings.low_balance_threshold",
            s.low_balance_threshold,
            true,
        )?;
        if s.low_balance_levels.len() > BALANCE_LEVELS_MAX {
            return Err(invalid(
                "settings.low_balance_levels",
                "low_balance_levels may list at most 10 levels",
            ));
        }
        let mut balance_levels_micros = vec![low_balance_threshold_micros];
        for level in &s.low_balance_levels {
            balance_levels_micros.push(money::decimal_to_micros(
                "settings.low_balance_levels",
                *level,
                true,
            )?);
        }
        balance_levels_micros.sort_unstable();
        balance_levels_micros.dedup();
        if s.runway_low_days > 365 {
            return Err(invalid(
                "settings.runway_low_days",
                "runway_low_days must be 0..365",
            ));
        }
        if s.credits_expiring_days > 365 {
            return Err(invalid(
                "settings.credits_expiring_days",
                "credits_expiring_days must be 0..365",
            ));
        }
        if s.hold_timeout_secs == 0 || i64::from(s.hold_timeout_secs) > calendar::SECS_PER_DAY {
            return Err(invalid(
                "settings.hold_timeout_secs",
                concat!("hold_timeout_secs must be 1..", calendar::secs_per_day!()),
            ));
        }
        if i64::from(s.inbound_grace_secs) > calendar::SECS_PER_DAY {
            return Err(invalid(
                "settings.inbound_grace_secs",
                concat!(
                    "inbound_grace_secs must be at most ",
                    calendar::secs_per_day!()
                ),
            ));
        }
        if s.auto_recharge_max_per_day == 0 || s.auto_recharge_max_per_day > 1_000 {
            return Err(invalid(
                "settings.auto_recharge_max_per_day",
                "auto_recharge_max_per_day must be 1..1000",
            ));
        }
        if doc.plans.is_empty() || doc.plans.len() > PLANS_MAX {
            return Err(invalid("plans", "a catalog has 1 to 100 plans"));
        }
        let mut plans = Vec::with_capacity(doc.plans.len());
        for plan in &doc.plans {
            if !valid_id(&plan.id) {
                return Err(invalid(
                    "plans.id",
                    "plan ids are 1-64 letters, digits, '_' or '-'",
                ));
            }
            if plans.iter().any(|p: &PlanTerms| p.id == plan.id) {
                // At most PLANS_MAX (100) plans: a linear scan is fine.
                return Err(invalid(
                    "plans.id",
                    format!("plan id {} appears twice", plan.id),
                ));
            }
            if plan.name.trim().is_empty() || plan.name.len() > 200 {
                return Err(invalid("plans.name", "plan names are 1-200 characters"));
            }
            plans.push(PlanTerms {
                id: plan.id.clone(),
                price_money_micros: money::decimal_to_micros("plans.price", plan.price, true)?,
                monthly_credits_micros: money::decimal_to_micros(
                    "plans.monthly_credits",
                    plan.monthly_credits,
                    true,
                )?,
                rollover_max_micros: plan
                    .rollover_max_credits
                    .map(|r| money::decimal_to_micros("plans.rollover_max_credits", r, true))
                    .transpose()?,
            });
        }
        if doc.rates.len() > RATES_MAX {
            return Err(invalid("rates", "a catalog has at most 10000 rates"));
        }
        let mut rates = Vec::with_capacity(doc.rates.len());
        let mut selectors = std::collections::HashSet::with_capacity(doc.rates.len());
        for rate in &doc.rates {
            let prefix = match &rate.prefix {
                Some(p) if !valid_prefix(p) => {
                    return Err(invalid(
                        "rates.prefix",
                        format!("{p} is not an E.164 prefix like +1 or +1800"),
                    ));
                }
                Some(p) => p.clone(),
                None => String::new(),
            };
            let increment_secs = i64::from(rate.increment_secs.unwrap_or(60));
            if increment_secs == 0 || increment_secs > 3_600 {
                return Err(invalid(
                    "rates.increment_secs",
                    "increment_secs must be 1..3600",
                ));
            }
            let terms = RateTerms {
                kind: rate.kind,
                direction: rate.direction,
                prefix,
                number_type: rate.number_type,
                price_micros: money::decimal_to_micros("rates.price", rate.price, true)?,
                increment_secs,
                minimum_secs: i64::from(rate.minimum_secs.unwrap_or(0)).min(calendar::SECS_PER_DAY),
            };
            if !selectors.insert((
                terms.kind,
                terms.direction,
                terms.prefix.clone(),
                terms.number_type,
            )) {
                return Err(invalid("rates", "two rates have the same selectors"));
            }
            rates.push(terms);
        }
        Ok(Self {
            version,
            credit_price_money_micros,
            topup_min_money_micros,
            topup_max_money_micros,
            low_balance_threshold_micros,
            balance_levels_micros,
            plans,
            rates,
            doc,
        })
    }

    /// The shipped default catalog (version 0).
    pub fn default_catalog() -> Result<Self> {
        let doc: CatalogDoc = serde_json::from_str(DEFAULT_CATALOG_JSON)
            .map_err(|e| invalid("catalog", format!("default catalog is malformed: {e}")))?;
        Self::validate(0, doc)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.doc.settings
    }

    /// A plan's terms, or 404.
    pub fn plan(&self, plan_id: &str) -> Result<&PlanTerms> {
        self.plans
            .iter()
            .find(|p| p.id == plan_id)
            .ok_or(LedgerError::NotFound { what: "plan" })
    }

    /// The rate of a non-call usage kind (most specific by direction, then any).
    pub fn unit_rate_micros(&self, kind: UsageKind, direction: Option<Direction>) -> Result<i64> {
        self.rates
            .iter()
            .filter(|r| r.kind == kind && r.prefix.is_empty())
            .filter(|r| r.direction.is_none() || r.direction == direction)
            .max_by_key(|r| r.direction.is_some())
            .map(|r| r.price_micros)
            .ok_or_else(|| no_rate(kind.as_str()))
    }

    /// The rate of a call (R4): longest E.164 prefix of the rated number, then number type, then
    /// direction. The rated number is the callee (`to`), for inbound calls the workspace's number.
    pub fn call_rate(
        &self,
        direction: Direction,
        to: &str,
        number_type: NumberType,
    ) -> Result<CallRate> {
        self.rates
            .iter()
            .filter(|r| r.kind == UsageKind::Call && to.starts_with(r.prefix.as_str()))
            .filter(|r| r.direction.is_none() || r.direction == Some(direction))
            .filter(|r| r.number_type.is_none() || r.number_type == Some(number_type))
            .max_by_key(|r| {
                (
                    r.prefix.len(),
                    r.number_type.is_some(),
                    r.direction.is_some(),
                )
            })
            .map(|r| CallRate {
                per_minute_micros: r.price_micros,
                increment_secs: r.increment_secs,
                minimum_secs: r.minimum_secs,
                number_type,
            })
            .ok_or_else(|| no_rate("call"))
    }
}

/// Number prefixes that are toll-free (NANP 8xx and the UK's 0800/0808).
const TOLL_FREE_PREFIXES: &[&str] = &[
    "+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888", "+44800", "+44808",
];

/// Checks `number` is E.164 (`+` then 2 to 15 digits, no leading zero).
pub fn validate_e164(field: &'static str, number: &str) -> Result<()> {
    let digits = number.strip_prefix('+').unwrap_or("");
    let ok = (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(LedgerError::invalid(
            "invalid_phone_number",
            field,
            format!("{field} must be an E.164 number such as +14155550123"),
        ))
    }
}

/// The type of an E.164 number.
pub fn number_type_of(number: &str) -> NumberType {
    if TOLL_FREE_PREFIXES.iter().any(|p| number.starts_with(p)) {
        NumberType::TollFree
    } else {
        NumberType::Standard
    }
}

/// Writes what the notification triggers read of the newest catalog (schema.rs, V11): the
/// levels `balance.low` is sent at and the inbound grace. Runs with each stored version and when
/// migration 11 creates the tables (with the default catalog if none is stored).
pub(crate) async fn write_notification_settings<S: Storage>(
    db: &S,
    catalog: &Catalog,
) -> Result<()> {
    db.execute("DELETE FROM notification_levels", &[]).await?;
    for level in &catalog.balance_levels_micros {
        db.execute(
            "INSERT INTO notification_levels (level_micros) VALUES (?1)",
            &[SqlValue::Integer(*level)],
        )
        .await?;
    }
    db.execute(
        "INSERT INTO notification_settings (id, inbound_grace_secs) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET inbound_grace_secs = excluded.inbound_grace_secs",
        &[SqlValue::Integer(i64::from(
            catalog.doc.settings.inbound_grace_secs,
        ))],
    )
    .await?;
    Ok(())
}

/// The current catalog: the newest stored version, or the shipped default.
pub async fn current<S: Storage>(db: &S) -> Result<CatalogVersion> {
    let catalog = load(db).await?;
    Ok(CatalogVersion {
        version: catalog.version,
        doc: catalog.doc,
    })
}

/// The newest catalog, validated, ready to rate with.
pub async fn load<S: Storage>(db: &S) -> Result<Catalog> {
    let rows = db
        .query(
            "SELECT version, body FROM catalog_versions ORDER BY version DESC LIMIT 1",
            &[],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Catalog::default_catalog();
    };
    let version = int(row, 0)?;
    let doc: CatalogDoc = serde_json::from_str(&text(row, 1)?)
        .map_err(|e| invalid("catalog", format!("stored catalog is malformed: {e}")))?;
    Catalog::validate(version, doc)
}

/// The newest stored version number (0 if none) as a scalar subquery: hot paths select it with
/// their read instead of asking for it in a statement of its own.
pub(crate) const CURRENT_VERSION: &str = "(SELECT COALESCE(MAX(version), 0) FROM catalog_versions)";

/// The newest stored version number (0 if none): cheap, for per-instance caches.
pub async fn current_version<S: Storage>(db: &S) -> Result<i64> {
    let rows = db.query(&format!("SELECT {CURRENT_VERSION}"), &[]).await?;
    rows.first().map_or(Ok(0), |row| int(row, 0))
}

/// What was priced with `catalog` before any read: a refusal only stands against the stored
/// catalog, so it becomes `CatalogChanged` if `catalog` is no longer that (one query, on
/// refusals only).
pub(crate) async fn priced_before_reading<S: Storage, T>(
    db: &S,
    catalog: &Catalog,
    priced: Result<T>,
) -> Result<T> {
    if priced.is_err() {
        ensure_current(db, catalog).await?;
    }
    priced
}

/// `Err(CatalogChanged)` unless `catalog` is the stored version (a hot path's check when it did
/// not read the version with its state: on a refusal priced before any read, and on the
/// transactional paths).
pub(crate) async fn ensure_current<S: Storage>(db: &S, catalog: &Catalog) -> Result<()> {
    if current_version(db).await? == catalog.version {
        Ok(())
    } else {
        Err(LedgerError::CatalogChanged)
    }
}

/// Validates and stores a new catalog version (as validated: the currency in upper case).
pub async fn put<S: Storage>(db: &S, doc: CatalogDoc, now_secs: i64) -> Result<CatalogVersion> {
    let catalog = Catalog::validate(0, doc)?;
    let body =
        serde_json::to_string(&catalog.doc).map_err(|e| invalid("catalog", e.to_string()))?;
    crate::tx::immediate(db, async |db| {
        let rows = db
            .query(
                "INSERT INTO catalog_versions (version, body, created_at)
                 SELECT COALESCE(MAX(version), 0) + 1, ?1, ?2 FROM catalog_versions
                 RETURNING version",
                &[SqlValue::Text(body.clone()), SqlValue::Integer(now_secs)],
            )
            .await?;
        let version = rows.first().map_or(Ok(0), |row| int(row, 0))?;
        write_notification_settings(db, &catalog).await?;
        Ok(CatalogVersion {
            version,
            doc: catalog.doc.clone(),
        })
    })
    .await
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn valid_prefix(prefix: &str) -> bool {
    let digits = prefix.strip_prefix('+').unwrap_or("");
    (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn invalid(field: &'static str, message: impl Into<String>) -> LedgerError {
    LedgerError::invalid("validation_error", field, message)
}

fn no_rate(kind: &str) -> LedgerError {
    LedgerError::Invalid {
        code: "no_rate",
        message: format!("The rate card has no rate for this {kind}."),
        field: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::default_catalog().expect("default catalog is valid")
    }

    #[test]
    fn longest_prefix_wins_including_toll_free() {
        let c = catalog();
        let rate = |dir, to: &str| {
            c.call_rate(dir, to, number_type_of(to))
                .map(|r| r.per_minute_micros)
        };
        assert_eq!(rate(Direction::Outbound, "+14155550123"), Ok(20_000));
        assert_eq!(rate(Direction::Outbound, "+442071234567"), Ok(30_000));
        assert_eq!(rate(Direction::Outbound, "+33142685300"), Ok(50_000));
        assert_eq!(rate(Direction::Outbound, "+18005550123"), Ok(40_000));
        assert_eq!(rate(Direction::Inbound, "+18005550123"), Ok(40_000));
        assert_eq!(rate(Direction::Inbound, "+14155550123"), Ok(10_000));
        assert_eq!(rate(Direction::Inbound, "+448001234567"), Ok(60_000));
    }

    #[test]
    fn per_started_minute() {
        let r = CallRate {
            per_minute_micros: 20_000,
            increment_secs: 60,
            minimum_secs: 0,
            number_type: NumberType::Standard,
        };
        assert_eq!(r.billed_secs(0), 0);
        assert_eq!(r.billed_secs(1), 60);
        assert_eq!(r.billed_secs(60), 60);
        assert_eq!(r.billed_secs(61), 120);
        assert_eq!(r.charge_for_secs(120), 40_000);
        // 6-second increments at 0.01/min: 7 s -> 12 s = 0.002 credits.
        let r6 = CallRate {
            per_minute_micros: 10_000,
            increment_secs: 6,
            minimum_secs: 30,
            number_type: NumberType::Standard,
        };
        assert_eq!(r6.billed_secs(7), 30);
        assert_eq!(r6.billed_secs(31), 36);
        assert_eq!(r6.charge_for_secs(36), 6_000);
        // 0.333333/min for 1 s = 0.00555555 -> 0.005556 (rounded up).
        let odd = CallRate {
            per_minute_micros: 333_333,
            increment_secs: 1,
            minimum_secs: 0,
            number_type: NumberType::Standard,
        };
        assert_eq!(odd.charge_for_secs(1), 5_556);
    }

    #[test]
    fn e164() {
        assert!(validate_e164("to", "+14155550123").is_ok());
        for bad in [
            "14155550123",
            "+0123",
            "+1",
            "+1234567890123456",
            "+1415a",
            "",
            "+",
        ] {
            assert!(validate_e164("to", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn omitted_settings_take_their_documented_defaults() {
        // Only the settings without a documented default, and the currency as Stripe writes it.
        let doc: CatalogDoc = serde_json::from_str(
            r#"{"settings": {"currency": "usd", "topup_min": "10", "topup_max": "5000",
                             "hold_timeout_secs": 120, "low_balance_threshold": "5"},
                "plans": [{"id": "free", "name": "Free", "price": "0", "monthly_credits": "10"}],
                "rates": [{"kind": "message", "price": "0.01"}]}"#,
        )
        .expect("a catalog without the defaulted settings");
        let catalog = Catalog::validate(1, doc).expect("valid");
        let s = catalog.settings();
        assert_eq!(s.currency, "USD");
        assert_eq!(s.credit_price, Decimal::ONE);
        assert_eq!(catalog.credit_price_money_micros, 1_000_000);
        assert_eq!(s.inbound_grace_secs, 900);
        assert_eq!(s.auto_recharge_max_per_day, 5);
        // Stored and answered with the defaults written out.
        let stored = serde_json::to_value(&catalog.doc.settings).expect("json");
        assert_eq!(
            stored,
            serde_json::json!({"currency": "USD", "credit_price": "1", "topup_min": "10",
                               "topup_max": "5000", "inbound_grace_secs": 900,
                               "hold_timeout_secs": 120, "low_balance_threshold": "5",
                               "runway_low_days": 7, "auto_recharge_max_per_day": 5,
                               "credits_expiring_days": 7})
        );
        // No documented default: still required.
        for required in [
            "currency",
            "topup_min",
            "topup_max",
            "hold_timeout_secs",
            "low_balance_threshold",
        ] {
            let mut settings = stored.clone();
            settings.as_object_mut().map(|s| s.remove(required));
            let parsed = serde_json::from_value::<Settings>(settings);
            assert!(parsed.is_err(), "{required} has no default");
        }
    }

    #[test]
    fn currencies_in_any_case_are_stored_upper_case() {
        for given in ["usd", "Usd", "uSD", "USD"] {
            let mut doc = catalog().doc;
            doc.settings.currency = given.into();
            let catalog = Catalog::validate(1, doc).expect(given);
            assert_eq!(catalog.settings().currency, "USD", "{given}");
        }
        assert_eq!(currency_code("eur"), "EUR");
        for bad in ["us", "usdd", "u$d", "", "12a"] {
            let mut doc = catalog().doc;
            doc.settings.currency = bad.into();
            assert_eq!(
                Catalog::validate(1, doc).map(|_| ()),
                Err(invalid(
                    "settings.currency",
                    "currency must be an ISO 4217 code such as USD"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn validation_refuses_bad_catalogs() {
        let mut doc = catalog().doc;
        doc.plans.push(doc.plans[0].clone());
        assert_eq!(
            Catalog::validate(1, doc).map(|_| ()).unwrap_err().code(),
            "validation_error"
        );
        let mut doc = catalog().doc;
        doc.rates[0].prefix = Some("1".into());
        assert!(Catalog::validate(1, doc).is_err());
        let mut doc = catalog().doc;
        doc.rates.push(doc.rates[1].clone());
        assert!(
            Catalog::validate(1, doc).is_err(),
            "duplicate rate selectors"
        );
        let mut doc = catalog().doc;
        doc.settings.topup_max = Decimal::ONE;
        assert!(Catalog::validate(1, doc).is_err());
    }
}
