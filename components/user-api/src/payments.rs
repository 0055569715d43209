//! The Stripe routes of the frontend API (R9, R10): saving a card through a SetupIntent,
//! re-reading the saved card, and card top-ups.
//!
//! Every route follows the same rule: a ledger operation (one `run_ledger`), then the Stripe call
//! OUTSIDE the ledger lock, then a ledger operation with its result. Money moves only in the
//! ledger, exactly once (`payments::settle`), whichever of this synchronous answer, the webhook
//! or the reconciliation job reports the success first.
//!
//! Top-ups:
//! - the payment id is derived from the request's `Idempotency-Key` when there is one
//!   (`tp_` + 32 hex digits of SHA-256 of the workspace and the key), so a retried request finds
//!   the same pending row and sends Stripe the same idempotency key (the payment id); otherwise
//!   it is random;
//! - `"card": "saved"` (the default when a card is on file) charges the saved card at once
//!   (`confirm=true&off_session=true`); `"card": "new"` (the default without one) leaves the
//!   PaymentIntent for Stripe.js (201 `pending` with its `client_secret`), created with
//!   `setup_future_usage=off_session`: Stripe saves the new card only if the payment succeeds,
//!   and only then does the ledger make it the workspace's card (`PaidWith::saves_card`), so a
//!   declined card, an abandoned 3-D Secure or an expired card never replaces the one on file;
//! - a declined card settles the top-up `failed` and answers 402 with the help centre's advice
//!   (R9);
//!   authentication the customer must complete leaves it `pending` and answers 402
//!   `authentication_required` with the `client_secret` for 3-D Secure;
//! - Stripe unreachable, slow or failing leaves it `pending` (the webhook or R21's
//!   reconciliation settles it) and answers 503 `payment_processing_error` with its id;
//! - a retry of a top-up that already has a PaymentIntent reads that PaymentIntent instead of
//!   creating another (and settles it from what it says: a canceled one fails).
//!
//! What a top-up becomes from Stripe's answer is the ledger's decision (`ledger::settlement`),
//! made and written by the one `payments::settle` the webhook and the reconciliation use too;
//! this module asks Stripe, hands over what Stripe said, and answers with the ledger's result.

use http::HeaderMap;
use ledger::LedgerError;
use ledger::payments::{self, PaidWith, Payment, PaymentMethod, Reported, Settled};
use ledger::settlement::{
    FailureCode, Report, RequestFailure, Settlement, card_error_needs_intent,
};
use ledger::statuses::IntentStatus;
use serde_json::{Value, json};
use spin_adapter::{
    ApiError, Reply, StripeFailure, card_error_report, classify, intent_report,
    make_saved_card_default, paid_with, payment_failed, payment_method, run_ledger, stripe_failure,
};
use stripe_client::{Card, CardError, Client, Form, NewPaymentIntent, PaymentIntent, StripeError};

/// Which card a top-up is paid with (`"card"` in its request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardChoice {
    /// The card on file, charged at once.
    Saved,
    /// A card the customer enters in Stripe.js; saved only if the payment succeeds.
    New,
}

/// 503 `payment_processing_error`: Stripe is not configured (empty `stripe_secret_key`).
pub fn payments_unavailable() -> ApiError {
    ApiError::from(LedgerError::payments_not_configured())
}

/// `prefix` + 32 hex digits: of SHA-256 of the workspace and the request's idempotency key when
/// there is one, else random.
pub(crate) fn derived_id(prefix: &str, ws: &str, headers: &HeaderMap) -> String {
    // The adapter refused a malformed key with 400 before this route ran.
    let digest = match spin_adapter::idempotency_key(headers).ok().flatten() {
        Some(key) => spin_adapter::sha256_hex(&[prefix.as_bytes(), ws.as_bytes(), key.as_bytes()]),
        None => {
            let random = || spin_sdk::wasip3::random::random::get_random_u64();
            format!("{:016x}{:016x}", random(), random())
        }
    };
    format!("{prefix}{}", digest.get(..32).unwrap_or(&digest))
}

/// The workspace's Stripe customer, created once (Idempotency-Key `customer-<ws>`) and stored.
pub(crate) async fn ensure_customer(client: &Client, ws: &str) -> Result<String, ApiError> {
    let state = run_ledger(async |db| ledger::workspace::get(db, ws).await).await?;
    if let Some(customer) = state.stripe_customer_id {
        return Ok(customer);
    }
    let customer = client
        .create_customer(
            Some(&state.email),
            Some(&state.name),
            ws,
            &format!("customer-{ws}"),
        )
        .await
        .map_err(|e| stripe_failure("customer creation", &e))?;
    let stored = run_ledger(async |db| {
        match ledger::workspace::set_stripe_customer(db, ws, &customer.id).await {
            Ok(()) => Ok(customer.id.clone()),
            // Another request stored its customer first: use that one.
            Err(LedgerError::Conflict { .. }) => ledger::workspace::get(db, ws)
                .await?
                .stripe_customer_id
                .ok_or(LedgerError::NotFound { what: "workspace" }),
            Err(error) => Err(error),
        }
    })
    .await?;
    Ok(stored)
}

/// `POST /v1/workspaces/{ws}/payment-method/setup`: a SetupIntent (`usage=off_session`) for the
/// workspace's customer -> 200 `{"client_secret", "setup_intent_id"}`.
pub async fn setup(client: &Client, ws: &str, headers: &HeaderMap) -> Result<Reply, ApiError> {
    let customer = ensure_customer(client, ws).await?;
    let key = derived_id("setup_", ws, headers);
    let intent = client
        .create_setup_intent(&customer, &key)
        .await
        .map_err(|e| stripe_failure("SetupIntent creation", &e))?;
    Ok(Reply::json(
        200,
        &json!({"client_secret": intent.client_secret, "setup_intent_id": intent.id}),
    ))
}

/// `POST /v1/workspaces/{ws}/payment-method/refresh`: reads the customer's cards from Stripe and
/// saves the default one (the customer's `invoice_settings.default_payment_method` when it is
/// among them, else the newest) -> 200 `{"payment_method": {...} | null}`. No card at Stripe
/// forgets the saved one (as `payment_method.detached` would).
pub async fn refresh(client: &Client, ws: &str) -> Result<Reply, ApiError> {
    let state = run_ledger(async |db| ledger::workspace::get(db, ws).await).await?;
    let Some(customer) = state.stripe_customer_id else {
        return Ok(Reply::json(200, &json!({"payment_method": null})));
    };
    let card = default_card(client, &customer)
        .await
        .map_err(|e| stripe_failure("card listing", &e))?;
    let Some(card) = card else {
        if let Some(saved) = state.payment_method_id {
            run_ledger(async |db| payments::remove_payment_method(db, &saved).await).await?;
        }
        return Ok(Reply::json(200, &json!({"payment_method": null})));
    };
    let method = payment_method(card);
    run_ledger(async |db| payments::set_payment_method(db, ws, &method).await).await?;
    Ok(Reply::json(200, &json!({"payment_method": method})))
}

/// The customer's default card, else its newest, else `None`.
async fn default_card(client: &Client, customer: &str) -> Result<Option<Card>, StripeError> {
    let query = Form::new()
        .with("customer", customer)
        .with("type", "card")
        .with("limit", "100");
    let list = client.get("/v1/payment_methods", &query).await?;
    let data = list
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| StripeError::Decode("list without `data`".into()))?;
    let mut cards = Vec::with_capacity(data.len());
    for item in data {
        let created = item.get("created").and_then(Value::as_i64).unwrap_or(0);
        cards.push((created, Card::from_json(item)?));
    }
    if cards.is_empty() {
        return Ok(None);
    }
    if !customer
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StripeError::BadInput(format!(
            "not a customer id: {customer:?}"
        )));
    }
    let record = client
        .get(&format!("/v1/customers/{customer}"), &Form::new())
        .await?;
    let default = record
        .pointer("/invoice_settings/default_payment_method")
        .and_then(|v| match v {
            Value::String(id) => Some(id.clone()),
            Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        });
    if let Some(default) = default
        && let Some(position) = cards.iter().position(|(_, c)| c.id == default)
    {
        return Ok(Some(cards.swap_remove(position).1));
    }
    // Newest first; among equal times the first listed (Stripe lists newest first).
    let mut best = 0;
    for (index, (created, _)) in cards.iter().enumerate() {
        if *created > cards[best].0 {
            best = index;
        }
    }
    Ok(Some(cards.swap_remove(best).1))
}

/// The 201 body of a top-up.
fn topup_body(payment: &Payment, client_secret: Option<&str>) -> Value {
    let mut body = json!({
        "id": payment.id,
        "status": payment.status,
        "amount": payment.amount,
        "credits": payment.credits,
    });
    if let Some(secret) = client_secret {
        body["client_secret"] = secret.into();
    }
    body
}

/// The answer for a payment's current state: 201 with it, or, for a failed one, its 402 (or
/// 502 for a failure that is not the card's).
fn answer(payment: &Payment, client_secret: Option<&str>) -> Result<Reply, ApiError> {
    match payment.failure() {
        None => Ok(Reply::json(201, &topup_body(payment, client_secret))),
        Some(code) => Err(payment_failed(code).with_detail("topup_id", payment.id.clone().into())),
    }
}

/// The answer for a top-up the ledger settled: credited or failed (201, or 402/502), still
/// pending (201, with the client secret for Stripe.js), or waiting for 3-D Secure (402
/// `authentication_required` with the client secret).
fn answer_settled(settled: &Settled, intent: Option<&PaymentIntent>) -> Result<Reply, ApiError> {
    let payment = &settled.payment;
    match (&settled.settlement, intent) {
        (
            Settlement::AwaitCustomer {
                authentication: true,
            },
            Some(intent),
        ) => Err(authentication_required(payment, intent)),
        (Settlement::Wait | Settlement::AwaitCustomer { .. }, intent) => {
            answer(payment, intent.and_then(|i| i.client_secret.as_deref()))
        }
        (Settlement::Succeed | Settlement::Fail(_) | Settlement::StripeFailed, _) => {
            answer(payment, None)
        }
    }
}

/// `POST /v1/workspaces/{ws}/topups` `{"amount", "card"?}` with Stripe configured.
pub async fn create_topup(
    client: &Client,
    ws: &str,
    amount: &str,
    card: Option<CardChoice>,
    headers: &HeaderMap,
    now: i64,
) -> Result<Reply, ApiError> {
    let payment_id = derived_id("tp_", ws, headers);
    let (payment, currency, saved) = run_ledger(async |db| {
        let saved = ledger::workspace::get(db, ws).await?.saved_card();
        let saved = match (card, saved) {
            (Some(CardChoice::New), _) | (None, None) => None,
            (Some(CardChoice::Saved) | None, Some(saved)) => Some(saved),
            (Some(CardChoice::Saved), None) => return Err(LedgerError::PaymentMethodRequired),
        };
        let catalog = spin_adapter::catalog(db).await?;
        let currency = catalog.settings().currency.clone();
        let amount_money_micros = ledger::money::parse_micros("amount", amount, false)?;
        let unchargeable = stripe_client::money::to_minor(amount_money_micros, &currency)
            .err()
            .map(|error| error.to_string());
        payments::refuse_unchargeable(&catalog, amount_money_micros, unchargeable)?;
        let payment = payments::create_topup(
            db,
            &catalog,
            ws,
            &payment_id,
            ledger::money::to_decimal(amount_money_micros),
            now,
        )
        .await?;
        Ok((payment, currency, saved))
    })
    .await?;
    if !payment.awaits_stripe() {
        return answer(&payment, None);
    }
    let outcome = match payment.payment_intent_id.as_deref() {
        // A retry of a top-up whose PaymentIntent exists: read it, never create another.
        Some(intent) => client.retrieve_payment_intent(intent).await,
        None => charge(client, ws, &payment, &currency, saved.as_ref()).await?,
    };
    let topup = Topup {
        client,
        payment: &payment,
        card: saved.as_ref(),
        now,
    };
    match outcome {
        Ok(intent) => topup.report_intent(&intent).await,
        Err(error) => match classify(&error) {
            StripeFailure::Card(card) => topup.report_card_error(card).await,
            StripeFailure::Request(failure) => topup.report_request_failure(failure, &error).await,
        },
    }
}

/// Creates the PaymentIntent of a pending top-up (Stripe idempotency key: the payment id): the
/// `saved` card is charged at once, off-session; without it the PaymentIntent waits for
/// Stripe.js and saves the new card if, and only if, it pays.
/// `Err` is a failure before the PaymentIntent (the customer); the inner result is Stripe's.
async fn charge(
    client: &Client,
    ws: &str,
    payment: &Payment,
    currency: &str,
    saved: Option<&PaymentMethod>,
) -> Result<stripe_client::Result<PaymentIntent>, ApiError> {
    let customer = ensure_customer(client, ws)
        .await
        .map_err(|e| e.with_detail("topup_id", payment.id.clone().into()))?;
    let amount_minor = match stripe_client::money::to_minor(payment.amount_money_micros, currency) {
        Ok(minor) => minor,
        Err(error) => return Ok(Err(error)),
    };
    let charge_now = saved.is_some();
    let new = NewPaymentIntent {
        amount_minor,
        currency: currency.to_owned(),
        customer,
        payment_method: saved.map(|card| card.id.clone()),
        confirm: charge_now,
        off_session: charge_now,
        save_card: !charge_now,
        payment_id: payment.id.clone(),
        workspace_id: ws.to_owned(),
    };
    Ok(client.create_payment_intent(&new, &payment.id).await)
}

/// A top-up being charged: what settling it from Stripe's answer needs.
struct Topup<'a> {
    client: &'a Client,
    payment: &'a Payment,
    /// The saved card charged, if it was one.
    card: Option<&'a PaymentMethod>,
    now: i64,
}

impl Topup<'_> {
    /// Hands Stripe's report to the ledger, which settles the top-up in one transaction (and
    /// records `intent_id` on it); a top-up that has another PaymentIntent is a conflict.
    async fn report_to_ledger(
        &self,
        intent_id: Option<&str>,
        report: &Report<'_>,
        paid: &PaidWith,
    ) -> Result<Settled, ApiError> {
        let reported = Reported::Payment {
            id: &self.payment.id,
            intent_id,
        };
        let settled = run_ledger(async |db| {
            payments::settle(db, reported, report, paid, self.now)
                .await?
                .ok_or_else(payments::intent_mismatch)
        })
        .await?;
        Ok(settled)
    }

    /// Settles the top-up from its PaymentIntent; a paid one with the card that paid (the saved
    /// card charged, or the card read from Stripe), made the workspace's when the payment saves
    /// it.
    async fn report_intent(&self, intent: &PaymentIntent) -> Result<Reply, ApiError> {
        let mut report = Report::Intent(intent_report(intent));
        let mut paid = PaidWith::default();
        if report.is_paid() {
            match paid_with(self.client, intent, self.card).await {
                Ok(card) => paid = card,
                Err(error) => {
                    spin_adapter::log!("topup: payment {} left pending: {error}", self.payment.id);
                    report = Report::CardToSaveUnreadable;
                }
            }
        }
        let settled = self
            .report_to_ledger(Some(&intent.id), &report, &paid)
            .await?;
        make_saved_card_default(self.client, &settled.payment, &paid).await;
        answer_settled(&settled, Some(intent))
    }

    /// A card error from a confirmed charge: its PaymentIntent is read back when the ledger's
    /// settlement depends on it (authentication the customer may still complete), then the
    /// ledger settles the top-up (recording the PaymentIntent).
    async fn report_card_error(&self, card: &CardError) -> Result<Reply, ApiError> {
        let intent_id = self.client.payment_intent_of(card).await;
        let report = card_error_report(card);
        let live = match intent_id.as_deref() {
            Some(intent) if card_error_needs_intent(&report, self.payment.kind) => {
                self.client.retrieve_payment_intent(intent).await.ok()
            }
            _ => None,
        };
        let status = live
            .as_ref()
            .map(|intent| IntentStatus::parse(&intent.status));
        let report = Report::CardError {
            report,
            intent: status,
        };
        let settled = self
            .report_to_ledger(intent_id.as_deref(), &report, &PaidWith::default())
            .await?;
        answer_settled(&settled, live.as_ref())
    }

    /// A charge request that failed without a card's answer: left pending (503 with its id), or
    /// settled as the ledger decides.
    async fn report_request_failure(
        &self,
        failure: RequestFailure,
        error: &StripeError,
    ) -> Result<Reply, ApiError> {
        let report = Report::RequestFailed(failure);
        let settled = self
            .report_to_ledger(None, &report, &PaidWith::default())
            .await?;
        if let Settlement::StripeFailed = settled.settlement {
            spin_adapter::log!(
                "topup: payment {} left pending after a Stripe failure",
                self.payment.id
            );
            return Err(stripe_failure("PaymentIntent", error)
                .with_detail("topup_id", self.payment.id.clone().into()));
        }
        answer_settled(&settled, None)
    }
}

/// 402 `authentication_required` for a top-up left pending: the frontend completes 3-D Secure
/// with the client secret.
fn authentication_required(payment: &Payment, intent: &PaymentIntent) -> ApiError {
    let mut error = payment_failed(FailureCode::AuthenticationRequired)
        .with_detail("topup_id", payment.id.clone().into())
        .with_detail("payment_intent_id", intent.id.clone().into());
    if let Some(secret) = &intent.client_secret {
        error = error.with_detail("client_secret", secret.clone().into());
    }
    error
}
