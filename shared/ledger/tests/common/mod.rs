//! A ledger on a real SQLite file in a temp dir, with helpers that speak in micro-credits.
#![allow(dead_code)]

use std::cell::RefCell;

use futures::executor::block_on;
use ledger::agents::{self, AgentLimits, OveragePolicy};
use ledger::catalog::{Catalog, Direction, UsageKind};
use ledger::native::NativeDb;
use ledger::settlement::{Failure, FailureCode, Report};
use ledger::usage::{DebitResult, UsageEvent};
use ledger::workspace::{WorkspaceInput, WorkspaceState};
use ledger::{
    LedgerError, Row, SqlValue, Storage, StorageError, audit, calendar, calls, payments, plans,
    usage, workspace,
};
use rust_decimal::Decimal;

/// 2026-11-01T00:00:00Z: a 30-day month.
pub const NOV_1: i64 = 1_793_491_200;
pub const DAY: i64 = 86_400;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub db: NativeDb,
    pub catalog: Catalog,
}

/// Settles a payment as Stripe reporting its success would (`payments::settle`).
pub async fn report_success<S: Storage>(
    db: &S,
    payment_id: &str,
    paid: &payments::PaidWith,
    now: i64,
) -> Result<payments::Payment, LedgerError> {
    let reported = payments::Reported::Payment {
        id: payment_id,
        intent_id: None,
    };
    let settled = payments::settle(db, reported, &Report::Succeeded, paid, now).await?;
    Ok(settled.expect("a payment of ours").payment)
}

/// Settles a payment as failed with a card failure already classified (`payments::settle`).
pub async fn report_failure<S: Storage>(
    db: &S,
    payment_id: &str,
    code: &str,
    message: &str,
    hard_decline: bool,
    now: i64,
) -> Result<payments::Payment, LedgerError> {
    let failure = Failure {
        code: FailureCode::parse(Some(code)),
        message: message.to_owned(),
        hard_decline,
    };
    let reported = payments::Reported::Payment {
        id: payment_id,
        intent_id: None,
    };
    let paid = payments::PaidWith::default();
    let settled = payments::settle(db, reported, &Report::Failed(failure), &paid, now).await?;
    Ok(settled.expect("a payment of ours").payment)
}

pub fn dec(text: &str) -> Decimal {
    text.parse().expect("decimal literal")
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = NativeDb::open(dir.path().join("ledger.db")).expect("open");
        block_on(ledger::schema::migrate(&db)).expect("migrate");
        let catalog = Catalog::default_catalog().expect("default catalog");
        Self { dir, db, catalog }
    }

    /// Another connection to the same file (as another Spin instance would have).
    pub fn connect(&self) -> NativeDb {
        let db = NativeDb::open(self.dir.path().join("ledger.db")).expect("open");
        block_on(ledger::schema::migrate(&db)).expect("migrate");
        db
    }

    /// Another connection to the same file, opened as a Spin instance's is
    /// ([`NativeDb::open_as_spin`]).
    pub fn connect_as_spin(&self) -> NativeDb {
        NativeDb::open_as_spin(self.dir.path().join("ledger.db")).expect("open")
    }

    pub fn workspace(&self, id: &str) -> WorkspaceState {
        let input = WorkspaceInput {
            name: format!("Workspace {id}"),
            email: format!("{id}@example.com"),
            currency: None,
            timezone: None,
        };
        block_on(workspace::upsert(
            &self.db,
            &self.catalog,
            id,
            &input,
            NOV_1,
        ))
        .expect("workspace")
    }

    /// A workspace subscribed to `plan` at `now`, its first period paid.
    pub fn subscribed(&self, id: &str, plan: &str, now: i64) -> WorkspaceState {
        self.workspace(id);
        block_on(plans::change_plan(
            &self.db,
            &self.catalog,
            id,
            plan,
            true,
            now,
        ))
        .expect("subscribe");
        self.state(id)
    }

    pub fn state(&self, id: &str) -> WorkspaceState {
        block_on(workspace::get(&self.db, id)).expect("workspace exists")
    }

    /// (plan credits, wallet) in micro-credits.
    pub fn balances(&self, id: &str) -> (i64, i64) {
        let ws = self.state(id);
        (ws.plan_credits_micros, ws.wallet_micros)
    }

    /// A top-up of `amount` currency, succeeded.
    pub fn topup(&self, ws: &str, payment_id: &str, amount: &str, now: i64) {
        block_on(payments::create_topup(
            &self.db,
            &self.catalog,
            ws,
            payment_id,
            dec(amount),
            now,
        ))
        .expect("topup");
        block_on(report_success(
            &self.db,
            payment_id,
            &payments::PaidWith::default(),
            now,
        ))
        .expect("settle");
    }

    /// Saves card pm_1 (visa 4242, 08/2030) as the workspace's payment method.
    pub fn save_card(&self, ws: &str) {
        let card = payments::PaymentMethod {
            id: "pm_1".into(),
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 8,
            exp_year: 2030,
        };
        block_on(payments::set_payment_method(&self.db, ws, &card)).expect("card");
    }

    /// Turns auto-recharge on (needs a saved card).
    pub fn enable_auto_recharge(&self, ws: &str, threshold: &str, amount: &str) {
        let settings = payments::AutoRechargeSettings {
            enabled: true,
            threshold: dec(threshold),
            amount: dec(amount),
            max_per_month: None,
        };
        block_on(payments::set_auto_recharge(
            &self.db,
            &self.catalog,
            ws,
            &settings,
        ))
        .expect("auto-recharge on");
    }

    pub fn event(
        &self,
        ws: &str,
        agent: &str,
        id: &str,
        kind: UsageKind,
        quantity: &str,
    ) -> UsageEvent {
        event(ws, agent, id, kind, quantity)
    }

    /// A finished outbound call of `seconds` to a US number, as a usage event.
    pub fn outbound_call(&self, ws: &str, agent: &str, id: &str, seconds: &str) -> UsageEvent {
        UsageEvent {
            direction: Some(Direction::Outbound),
            to: Some("+14155550123".into()),
            ..event(ws, agent, id, UsageKind::Call, seconds)
        }
    }

    /// Sets an agent's overage policy and monthly spending limit (no call limits).
    pub fn spend_limits(
        &self,
        ws: &str,
        agent: &str,
        policy: OveragePolicy,
        monthly_spend_limit: Option<&str>,
    ) {
        let limits = AgentLimits {
            overage_policy: policy,
            monthly_spend_limit: monthly_spend_limit.map(dec),
            daily_call_limit: None,
            max_concurrent_calls: None,
        };
        block_on(agents::put_limits(&self.db, ws, agent, &limits, NOV_1)).expect("limits");
    }

    pub fn debit(
        &self,
        ws: &str,
        agent: &str,
        id: &str,
        kind: UsageKind,
        quantity: &str,
        now: i64,
    ) -> Result<DebitResult, LedgerError> {
        block_on(usage::record(
            &self.db,
            &self.catalog,
            &self.event(ws, agent, id, kind, quantity),
            now,
        ))
    }

    pub fn call(
        &self,
        ws: &str,
        agent: &str,
        call_id: &str,
        direction: Direction,
        to: &str,
        now: i64,
    ) -> Result<calls::CallAuthorized, LedgerError> {
        let request = calls::CallRequest {
            workspace_id: ws.into(),
            agent_id: agent.into(),
            call_id: call_id.into(),
            direction,
            to: to.into(),
            from: "+14155550100".into(),
        };
        block_on(calls::authorize(&self.db, &self.catalog, &request, now))
    }

    /// The workspace's daily usage rollup (`usage_daily`): (UTC date, spent micro-credits).
    pub fn usage_daily(&self, ws: &str) -> Vec<(String, i64)> {
        let rows = block_on(self.db.query(
            "SELECT date(day * 86400, 'unixepoch'), spent_micros FROM usage_daily
             WHERE workspace_id = ?1 ORDER BY day",
            &[SqlValue::Text(ws.into())],
        ))
        .expect("usage_daily");
        rows.iter()
            .map(|row| match (&row[0], &row[1]) {
                (SqlValue::Text(date), SqlValue::Integer(spent)) => (date.clone(), *spent),
                other => panic!("unexpected usage_daily row {other:?}"),
            })
            .collect()
    }

    pub fn journal_rows(&self) -> i64 {
        block_on(audit::journal_rows(&self.db)).expect("count")
    }

    /// Every invariant holds.
    pub fn assert_invariants(&self) {
        let violations = block_on(audit::check(&self.db)).expect("audit runs");
        assert!(violations.is_empty(), "invariants broken: {violations:#?}");
    }
}

/// A usage event that happened at [`NOV_1`].
pub fn event(ws: &str, agent: &str, id: &str, kind: UsageKind, quantity: &str) -> UsageEvent {
    UsageEvent {
        id: id.into(),
        workspace_id: ws.into(),
        agent_id: agent.into(),
        kind,
        quantity: dec(quantity),
        occurred_at: Some(calendar::rfc3339(NOV_1)),
        direction: None,
        to: None,
        from: None,
    }
}

/// Rows of [`Fixture::usage_daily`] from (date, credits) literals.
pub fn days(rows: &[(&str, &str)]) -> Vec<(String, i64)> {
    rows.iter()
        .map(|(date, credits)| ((*date).to_owned(), micros(credits)))
        .collect()
}

/// Micro-credits from a decimal literal.
pub fn micros(text: &str) -> i64 {
    match text.strip_prefix('-') {
        Some(positive) => -micros(positive),
        None => ledger::money::parse_micros("test", text, true).expect("amount literal"),
    }
}

/// The ledger's connection, recording each statement's first word, and running `hook` (on
/// another connection) just before the statements whose numbers `hook_before` lists.
pub struct Watched<'a> {
    db: &'a NativeDb,
    statements: RefCell<Vec<String>>,
    hook_before: Vec<usize>,
    hook: Box<dyn Fn() + 'a>,
}

impl<'a> Watched<'a> {
    pub fn new(db: &'a NativeDb, hook_before: Vec<usize>, hook: impl Fn() + 'a) -> Self {
        Self {
            db,
            statements: RefCell::default(),
            hook_before,
            hook: Box::new(hook),
        }
    }

    fn before(&self, sql: &str) {
        let number = self.statements.borrow().len();
        if self.hook_before.contains(&number) {
            (self.hook)();
        }
        let first = sql.split_whitespace().next().unwrap_or("").to_owned();
        self.statements.borrow_mut().push(first);
    }

    pub fn statements(&self) -> Vec<String> {
        self.statements.borrow().clone()
    }
}

impl Storage for Watched<'_> {
    async fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<(), StorageError> {
        self.before(sql);
        self.db.execute(sql, params).await
    }

    async fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Row>, StorageError> {
        self.before(sql);
        self.db.query(sql, params).await
    }
}

/// Debits `event` on a new connection of its own, on another thread (as another instance would).
pub fn debit_elsewhere(fx: &Fixture, event: UsageEvent) -> DebitResult {
    let path = fx.dir.path().join("ledger.db");
    let catalog = fx.catalog.clone();
    std::thread::spawn(move || {
        let db = NativeDb::open(path).expect("open");
        block_on(usage::record(&db, &catalog, &event, NOV_1)).expect("the other debit")
    })
    .join()
    .expect("other thread")
}

/// Every row of the tables a debit writes, in a stable order.
pub fn dump(db: &NativeDb) -> Vec<(&'static str, Vec<Row>)> {
    [
        ("workspaces", "SELECT * FROM workspaces ORDER BY id"),
        ("transactions", "SELECT * FROM transactions ORDER BY id"),
        ("journal", "SELECT * FROM journal ORDER BY id"),
        ("agents", "SELECT * FROM agents ORDER BY 1, 2"),
        (
            "usage_events",
            "SELECT workspace_id, event_id, request_hash, transaction_id, json(result), created_at
             FROM usage_events ORDER BY 1, 2",
        ),
        ("grants", "SELECT * FROM grants ORDER BY id"),
        ("grant_entries", "SELECT * FROM grant_entries ORDER BY id"),
    ]
    .into_iter()
    .map(|(table, sql)| (table, block_on(db.query(sql, &[])).expect("dump")))
    .collect()
}
