//! The calls the billing product makes, as typed helpers returning small structs.
//!
//! Every helper sends only parameters both Stripe and localstripe 1.15.10 accept (localstripe
//! refuses unknown ones with 400 "Unexpected ..."). Parsing is pure (`from_json`) and tested
//! against Stripe's fixtures.

use crate::client::Client;
use crate::error::{Result, StripeError, id_of};
use crate::form::{Form, key};
use serde_json::Value;
use std::collections::BTreeMap;

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn required(v: &Value, field: &str, object: &str) -> Result<String> {
    text(v, field).ok_or_else(|| StripeError::Decode(format!("{object} without `{field}`")))
}

fn int(v: &Value, field: &str) -> Option<i64> {
    v.get(field).and_then(Value::as_i64)
}

fn metadata(v: &Value) -> BTreeMap<String, String> {
    v.get("metadata")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn list_data(v: &Value) -> Result<&Vec<Value>> {
    v.get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| StripeError::Decode("list without `data`".into()))
}

/// A Stripe Customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// `cus_...`.
    pub id: String,
    /// Email, if set.
    pub email: Option<String>,
    /// Name, if set.
    pub name: Option<String>,
    /// Metadata (`workspace_id`).
    pub metadata: BTreeMap<String, String>,
}

impl Customer {
    /// Reads a Customer object.
    pub fn from_json(v: &Value) -> Result<Self> {
        Ok(Self {
            id: required(v, "id", "customer")?,
            email: text(v, "email"),
            name: text(v, "name"),
            metadata: metadata(v),
        })
    }
}

/// A Stripe SetupIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupIntent {
    /// `seti_...`.
    pub id: String,
    /// For Stripe.js (`confirmCardSetup`).
    pub client_secret: Option<String>,
    /// `requires_payment_method`, `requires_action`, `succeeded`, `canceled`, ...
    pub status: String,
    /// The PaymentMethod being saved, once known.
    pub payment_method: Option<String>,
    /// The customer, if any.
    pub customer: Option<String>,
}

impl SetupIntent {
    /// Reads a SetupIntent object.
    pub fn from_json(v: &Value) -> Result<Self> {
        Ok(Self {
            id: required(v, "id", "setup intent")?,
            client_secret: text(v, "client_secret"),
            status: required(v, "status", "setup intent")?,
            payment_method: id_of(v.get("payment_method")),
            customer: id_of(v.get("customer")),
        })
    }
}

/// A saved card (a PaymentMethod of type `card`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// `pm_...`.
    pub id: String,
    /// `visa`, `mastercard`, ...
    pub brand: String,
    /// Last four digits.
    pub last4: String,
    /// Expiry month (1-12).
    pub exp_month: u32,
    /// Expiry year (four digits).
    pub exp_year: u32,
    /// The customer it is attached to, if any.
    pub customer: Option<String>,
}

impl Card {
    /// Reads a PaymentMethod object of type `card`.
    pub fn from_json(v: &Value) -> Result<Self> {
        let card = v
            .get("card")
            .filter(|c| c.is_object())
            .ok_or_else(|| StripeError::Decode("payment method without `card`".into()))?;
        let number = |field: &str| -> Result<u32> {
            int(card, field)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| StripeError::Decode(format!("card without `{field}`")))
        };
        Ok(Self {
            id: required(v, "id", "payment method")?,
            brand: required(card, "brand", "card")?,
            last4: required(card, "last4", "card")?,
            exp_month: number("exp_month")?,
            exp_year: number("exp_year")?,
            customer: id_of(v.get("customer")),
        })
    }
}

/// A failed charge, as an unpaid invoice's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCharge {
    /// Stripe's `failure_code`, when it gave one.
    pub failure_code: Option<String>,
}

/// Why the last payment attempt failed (a PaymentIntent's `last_payment_error`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentError {
    /// Stripe's `code`, e.g. `card_declined`.
    pub code: Option<String>,
    /// Stripe's `decline_code`.
    pub decline_code: Option<String>,
    /// Stripe's message.
    pub message: Option<String>,
}

/// A Stripe PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntent {
    /// `pi_...`.
    pub id: String,
    /// `requires_payment_method`, `requires_confirmation`, `requires_action`, `processing`,
    /// `requires_capture`, `canceled` or `succeeded`.
    pub status: String,
    /// Amount in minor units.
    pub amount: i64,
    /// Lower-case ISO currency.
    pub currency: String,
    /// For Stripe.js (`confirmCardPayment`).
    pub client_secret: Option<String>,
    /// The customer, if any.
    pub customer: Option<String>,
    /// The payment method, if any.
    pub payment_method: Option<String>,
    /// `off_session` or `on_session` when the payment also saves its card to the customer
    /// (Stripe attaches it only if the payment succeeds).
    pub setup_future_usage: Option<String>,
    /// The latest charge (an id; localstripe returns the object, read as its id).
    pub latest_charge: Option<String>,
    /// Why the last attempt failed, if it did.
    pub last_payment_error: Option<PaymentError>,
    /// Metadata (`payment_id`, `workspace_id`).
    pub metadata: BTreeMap<String, String>,
}

impl PaymentIntent {
    /// Reads a PaymentIntent object.
    pub fn from_json(v: &Value) -> Result<Self> {
        let last_payment_error = v
            .get("last_payment_error")
            .filter(|e| e.is_object())
            .map(|e| PaymentError {
                code: text(e, "code"),
                decline_code: text(e, "decline_code"),
                message: text(e, "message"),
            });
        Ok(Self {
            id: required(v, "id", "payment intent")?,
            status: required(v, "status", "payment intent")?,
            amount: int(v, "amount")
                .ok_or_else(|| StripeError::Decode("payment intent without `amount`".into()))?,
            currency: required(v, "currency", "payment intent")?,
            client_secret: text(v, "client_secret"),
            customer: id_of(v.get("customer")),
            payment_method: id_of(v.get("payment_method")),
            setup_future_usage: text(v, "setup_future_usage"),
            latest_charge: id_of(v.get("latest_charge")),
            last_payment_error,
            metadata: metadata(v),
        })
    }

    /// Whether the money is in.
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }

    /// Whether paying also saves the card (`setup_future_usage` set).
    pub fn saves_card(&self) -> bool {
        self.setup_future_usage.is_some()
    }
}

/// What to charge: the parameters of [`Client::create_payment_intent`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewPaymentIntent {
    /// Amount in minor units (see [`crate::money::to_minor`]).
    pub amount_minor: i64,
    /// ISO currency (sent lower case).
    pub currency: String,
    /// The customer.
    pub customer: String,
    /// A saved payment method to charge; `None` leaves it to Stripe.js (client secret).
    pub payment_method: Option<String>,
    /// Confirm at once (server-side charge of a saved card).
    pub confirm: bool,
    /// The customer is not present (auto-recharge); implies `confirm`.
    pub off_session: bool,
    /// Save the card the customer pays with for later off-session charges
    /// (`setup_future_usage=off_session`): Stripe attaches it to the customer only if the
    /// payment succeeds.
    pub save_card: bool,
    /// Our payment's id, stored as `metadata[payment_id]`.
    pub payment_id: String,
    /// The workspace, stored as `metadata[workspace_id]`.
    pub workspace_id: String,
}

impl NewPaymentIntent {
    /// The form sent to `POST /v1/payment_intents`.
    pub fn form(&self) -> Result<Form> {
        if self.amount_minor <= 0 {
            return Err(StripeError::BadInput(format!(
                "payment amount must be positive, got {}",
                self.amount_minor
            )));
        }
        let confirm = self.confirm || self.off_session;
        let mut form = Form::new()
            .with("amount", self.amount_minor.to_string())
            .with("currency", self.currency.to_ascii_lowercase())
            .with("customer", self.customer.clone())
            .with_opt("payment_method", self.payment_method.clone());
        if self.payment_method.is_none() {
            form = form.with(key(&["payment_method_types", "0"]), "card");
        }
        if confirm {
            form = form.with("confirm", "true");
        }
        if self.off_session {
            form = form.with("off_session", "true");
        }
        if self.save_card {
            form = form.with("setup_future_usage", "off_session");
        }
        Ok(form
            .with_metadata("payment_id", self.payment_id.clone())
            .with_metadata("workspace_id", self.workspace_id.clone()))
    }
}

/// How a subscription's plan change is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proration {
    /// Stripe's default: the difference for the rest of the period goes on the next invoice.
    Create,
    /// No proration: the new price applies from the next period.
    None,
}

/// A Stripe Subscription (one item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `sub_...`.
    pub id: String,
    /// `incomplete`, `active`, `past_due`, `canceled`, ...
    pub status: String,
    /// The customer.
    pub customer: Option<String>,
    /// The first item's id (`si_...`), to change its plan.
    pub item_id: Option<String>,
    /// The first item's plan (or price) id.
    pub plan_id: Option<String>,
    /// Current period start (Unix seconds), from the subscription or its first item.
    pub current_period_start: Option<i64>,
    /// Current period end (Unix seconds).
    pub current_period_end: Option<i64>,
    /// The latest invoice id.
    pub latest_invoice: Option<String>,
    /// Whether it ends when the current period ends.
    pub cancel_at_period_end: bool,
}

impl Subscription {
    /// Reads a Subscription object.
    pub fn from_json(v: &Value) -> Result<Self> {
        let item = v
            .get("items")
            .and_then(|i| i.get("data"))
            .and_then(Value::as_array)
            .and_then(|d| d.first());
        let plan_id = item.and_then(|i| id_of(i.get("plan")).or_else(|| id_of(i.get("price"))));
        let period = |field: &str| int(v, field).or_else(|| item.and_then(|i| int(i, field)));
        Ok(Self {
            id: required(v, "id", "subscription")?,
            status: required(v, "status", "subscription")?,
            customer: id_of(v.get("customer")),
            item_id: item.and_then(|i| text(i, "id")),
            plan_id,
            current_period_start: period("current_period_start"),
            current_period_end: period("current_period_end"),
            latest_invoice: id_of(v.get("latest_invoice")),
            cancel_at_period_end: v
                .get("cancel_at_period_end")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// A Stripe Invoice, as the invoice list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// `in_...`.
    pub id: String,
    /// Invoice number (none on drafts, nor from localstripe).
    pub number: Option<String>,
    /// `draft`, `open`, `paid`, `void`, `uncollectible`.
    pub status: Option<String>,
    /// Amount paid in minor units.
    pub amount_paid: i64,
    /// Lower-case ISO currency.
    pub currency: String,
    /// Creation time (Unix seconds).
    pub created: i64,
    /// Stripe's hosted page (none from localstripe).
    pub hosted_invoice_url: Option<String>,
    /// The PDF (none from localstripe).
    pub invoice_pdf: Option<String>,
}

impl Invoice {
    /// Reads an Invoice object.
    pub fn from_json(v: &Value) -> Result<Self> {
        Ok(Self {
            id: required(v, "id", "invoice")?,
            number: text(v, "number"),
            status: text(v, "status"),
            amount_paid: int(v, "amount_paid").unwrap_or(0),
            currency: required(v, "currency", "invoice")?,
            created: int(v, "created")
                .or_else(|| int(v, "date"))
                .ok_or_else(|| StripeError::Decode("invoice without `created`".into()))?,
            hosted_invoice_url: text(v, "hosted_invoice_url"),
            invoice_pdf: text(v, "invoice_pdf"),
        })
    }
}

/// A Charge, as read to learn its PaymentIntent and refunds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// `ch_...`.
    pub id: String,
    /// `succeeded`, `pending` or `failed`.
    pub status: String,
    /// The PaymentIntent it belongs to.
    pub payment_intent: Option<String>,
    /// Amount refunded in minor units.
    pub amount_refunded: i64,
}

impl Charge {
    /// Reads a Charge object.
    pub fn from_json(v: &Value) -> Result<Self> {
        Ok(Self {
            id: required(v, "id", "charge")?,
            status: required(v, "status", "charge")?,
            payment_intent: id_of(v.get("payment_intent")),
            amount_refunded: int(v, "amount_refunded").unwrap_or(0),
        })
    }
}

fn path_id(id: &str) -> Result<&str> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(StripeError::BadInput(format!("not a Stripe id: {id:?}")));
    }
    Ok(id)
}

impl Client {
    /// `POST /v1/customers` with `email`, `name` and `metadata[workspace_id]`.
    pub async fn create_customer(
        &self,
        email: Option<&str>,
        name: Option<&str>,
        workspace_id: &str,
        idempotency_key: &str,
    ) -> Result<Customer> {
        let form = Form::new()
            .with_opt("email", email)
            .with_opt("name", name)
            .with_metadata("workspace_id", workspace_id);
        Customer::from_json(&self.post("/v1/customers", &form, idempotency_key).await?)
    }

    /// `POST /v1/setup_intents` for `customer`, `usage=off_session` (cards for auto-recharge).
    pub async fn create_setup_intent(
        &self,
        customer: &str,
        idempotency_key: &str,
    ) -> Result<SetupIntent> {
        let form = Form::new()
            .with("customer", customer)
            .with("usage", "off_session")
            .with(key(&["payment_method_types", "0"]), "card");
        SetupIntent::from_json(
            &self
                .post("/v1/setup_intents", &form, idempotency_key)
                .await?,
        )
    }

    /// `GET /v1/setup_intents/{id}`.
    pub async fn retrieve_setup_intent(&self, id: &str) -> Result<SetupIntent> {
        let path = format!("/v1/setup_intents/{}", path_id(id)?);
        SetupIntent::from_json(&self.get(&path, &Form::new()).await?)
    }

    /// `GET /v1/payment_methods?customer=..&type=card`: the customer's saved cards (first 100).
    pub async fn list_cards(&self, customer: &str) -> Result<Vec<Card>> {
        let query = Form::new()
            .with("customer", customer)
            .with("type", "card")
            .with("limit", "100");
        let list = self.get("/v1/payment_methods", &query).await?;
        list_data(&list)?.iter().map(Card::from_json).collect()
    }

    /// `GET /v1/payment_methods/{id}`: one card.
    pub async fn retrieve_card(&self, id: &str) -> Result<Card> {
        let path = format!("/v1/payment_methods/{}", path_id(id)?);
        Card::from_json(&self.get(&path, &Form::new()).await?)
    }

    /// `POST /v1/payment_intents`. A confirmed charge that is declined fails with
    /// [`StripeError::Card`] (Stripe names the PaymentIntent in it; localstripe only the charge:
    /// see [`Client::retrieve_charge`]).
    pub async fn create_payment_intent(
        &self,
        new: &NewPaymentIntent,
        idempotency_key: &str,
    ) -> Result<PaymentIntent> {
        let form = new.form()?;
        PaymentIntent::from_json(
            &self
                .post("/v1/payment_intents", &form, idempotency_key)
                .await?,
        )
    }

    /// `GET /v1/payment_intents/{id}`.
    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent> {
        let path = format!("/v1/payment_intents/{}", path_id(id)?);
        PaymentIntent::from_json(&self.get(&path, &Form::new()).await?)
    }

    /// The PaymentIntent created for our payment `payment_id` (its `metadata[payment_id]`), found
    /// through the customer's charges created after `created_after` (Unix seconds), if any: how a
    /// charge whose answer was lost is found again without relying on idempotency keys (kept
    /// 24 h by Stripe, not at all by localstripe). A PaymentIntent that made no charge is not
    /// found.
    pub async fn find_payment_intent(
        &self,
        customer: &str,
        payment_id: &str,
        created_after: i64,
    ) -> Result<Option<PaymentIntent>> {
        let query = Form::new()
            .with("customer", customer)
            .with(key(&["created", "gt"]), created_after.to_string())
            .with("limit", "100");
        let charges = self.get("/v1/charges", &query).await?;
        let mut seen = Vec::new();
        for charge in list_data(&charges)? {
            let Some(intent_id) = id_of(charge.get("payment_intent")) else {
                continue;
            };
            if seen.contains(&intent_id) {
                continue;
            }
            let intent = self.retrieve_payment_intent(&intent_id).await?;
            if intent.metadata.get("payment_id").map(String::as_str) == Some(payment_id) {
                return Ok(Some(intent));
            }
            seen.push(intent_id);
        }
        Ok(None)
    }

    /// `GET /v1/charges/{id}`.
    pub async fn retrieve_charge(&self, id: &str) -> Result<Charge> {
        let path = format!("/v1/charges/{}", path_id(id)?);
        Charge::from_json(&self.get(&path, &Form::new()).await?)
    }

    /// The PaymentIntent a card failure belongs to: named in Stripe's error, or (localstripe names
    /// only the charge) found through the charge. `None` when neither can be read.
    pub async fn payment_intent_of(&self, card: &crate::CardError) -> Option<String> {
        if let Some(id) = &card.payment_intent {
            return Some(id.clone());
        }
        let charge = card.charge.as_deref()?;
        match self.retrieve_charge(charge).await {
            Ok(found) => found.payment_intent,
            Err(error) => {
                // Never `eprintln!`, which panics when the log's disk is full (spin-adapter's `log!`).
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "stripe-client: charge {charge} unreadable: {error}"
                );
                None
            }
        }
    }

    /// `POST /v1/subscriptions` with `items[0][plan]=plan_id` and `metadata[workspace_id]`
    /// (localstripe knows only Plans; Stripe accepts a Plan id where a Price is expected). The
    /// first invoice is charged to the customer's default payment method at once
    /// (`payment_behavior=error_if_incomplete`): a declined card is a [`StripeError::Card`] and
    /// leaves no subscription behind.
    pub async fn create_subscription(
        &self,
        customer: &str,
        plan_id: &str,
        workspace_id: &str,
        idempotency_key: &str,
    ) -> Result<Subscription> {
        let form = Form::new()
            .with("customer", customer)
            .with(key(&["items", "0", "plan"]), plan_id)
            .with("payment_behavior", "error_if_incomplete")
            .with_metadata("workspace_id", workspace_id);
        Subscription::from_json(
            &self
                .post("/v1/subscriptions", &form, idempotency_key)
                .await?,
        )
    }

    /// `POST /v1/subscriptions/{id}` moving item `item_id` to `plan_id`. An upgrade is prorated
    /// (Stripe's default `create_prorations`; the parameter is not sent, as localstripe refuses
    /// it); a downgrade scheduled for the next period is not (`proration_behavior=none`): the
    /// period in progress was paid at the old price and keeps the old plan's credits (R15).
    pub async fn change_subscription_plan(
        &self,
        subscription_id: &str,
        item_id: &str,
        plan_id: &str,
        proration: Proration,
        idempotency_key: &str,
    ) -> Result<Subscription> {
        let path = format!("/v1/subscriptions/{}", path_id(subscription_id)?);
        let mut form = Form::new()
            .with(key(&["items", "0", "id"]), item_id)
            .with(key(&["items", "0", "plan"]), plan_id);
        if proration == Proration::None {
            form = form.with("proration_behavior", "none");
        }
        Subscription::from_json(&self.post(&path, &form, idempotency_key).await?)
    }

    /// `POST /v1/subscriptions/{id}` with `cancel_at_period_end`: `true` ends the subscription when
    /// the paid period ends (a downgrade to a free plan), `false` keeps it going.
    pub async fn set_cancel_at_period_end(
        &self,
        subscription_id: &str,
        cancel: bool,
        idempotency_key: &str,
    ) -> Result<Subscription> {
        let path = format!("/v1/subscriptions/{}", path_id(subscription_id)?);
        let form = Form::new().with(
            "cancel_at_period_end",
            if cancel { "true" } else { "false" },
        );
        Subscription::from_json(&self.post(&path, &form, idempotency_key).await?)
    }

    /// `GET /v1/subscriptions?customer=..`: the customer's subscriptions not canceled (first 100).
    pub async fn list_subscriptions(&self, customer: &str) -> Result<Vec<Subscription>> {
        let query = Form::new().with("customer", customer).with("limit", "100");
        let list = self.get("/v1/subscriptions", &query).await?;
        list_data(&list)?
            .iter()
            .map(Subscription::from_json)
            .collect()
    }

    /// Why invoice `invoice_id` is unpaid: its charge when the charge failed, else `None` (not
    /// attempted, or awaiting the customer, e.g. 3-D Secure).
    pub async fn invoice_charge_failure(&self, invoice_id: &str) -> Result<Option<FailedCharge>> {
        let path = format!("/v1/invoices/{}", path_id(invoice_id)?);
        let invoice = self.get(&path, &Form::new()).await?;
        let charge = match invoice.get("charge") {
            Some(object @ Value::Object(_)) => object.clone(),
            Some(Value::String(id)) => {
                let path = format!("/v1/charges/{}", path_id(id)?);
                self.get(&path, &Form::new()).await?
            }
            _ => return Ok(None),
        };
        if text(&charge, "status").as_deref() != Some("failed") {
            return Ok(None);
        }
        Ok(Some(FailedCharge {
            failure_code: text(&charge, "failure_code"),
        }))
    }

    /// `GET /v1/subscriptions/{id}`.
    pub async fn retrieve_subscription(&self, subscription_id: &str) -> Result<Subscription> {
        let path = format!("/v1/subscriptions/{}", path_id(subscription_id)?);
        Subscription::from_json(&self.get(&path, &Form::new()).await?)
    }

    /// `POST /v1/customers/{id}` with `invoice_settings[default_payment_method]`: the card
    /// subscription invoices are charged to.
    pub async fn set_default_payment_method(
        &self,
        customer: &str,
        payment_method: &str,
        idempotency_key: &str,
    ) -> Result<Customer> {
        let path = format!("/v1/customers/{}", path_id(customer)?);
        let form = Form::new().with(
            key(&["invoice_settings", "default_payment_method"]),
            payment_method,
        );
        Customer::from_json(&self.post(&path, &form, idempotency_key).await?)
    }

    /// `DELETE /v1/subscriptions/{id}`: cancels at once.
    pub async fn cancel_subscription(&self, subscription_id: &str) -> Result<Subscription> {
        let path = format!("/v1/subscriptions/{}", path_id(subscription_id)?);
        Subscription::from_json(&self.delete(&path).await?)
    }

    /// `GET /v1/invoices?customer=..&limit=..`, newest first as Stripe lists them.
    pub async fn list_invoices(&self, customer: &str, limit: u32) -> Result<Vec<Invoice>> {
        let query = Form::new()
            .with("customer", customer)
            .with("limit", limit.clamp(1, 100).to_string());
        let list = self.get("/v1/invoices", &query).await?;
        list_data(&list)?.iter().map(Invoice::from_json).collect()
    }

    /// `POST /v1/billing_portal/sessions` -> the portal URL (not in localstripe).
    pub async fn create_billing_portal_session(
        &self,
        customer: &str,
        return_url: Option<&str>,
        idempotency_key: &str,
    ) -> Result<String> {
        let form = Form::new()
            .with("customer", customer)
            .with_opt("return_url", return_url);
        let session = self
            .post("/v1/billing_portal/sessions", &form, idempotency_key)
            .await?;
        required(&session, "url", "billing portal session")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        // Cargo sets the variable when it runs a test too: prefer that to the compiled-in path,
        // which names wherever the cached binary was built (the target dir may be shared).
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
        let path = format!("{dir}/tests/fixtures/{name}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn stripe_fixtures_parse() {
        let c = Customer::from_json(&fixture("customer.json")).unwrap();
        assert_eq!(c.id, "cus_QXg1o8vcGmoR32");
        let s = SetupIntent::from_json(&fixture("setup_intent.json")).unwrap();
        assert_eq!(s.status, "requires_payment_method");
        assert!(s.client_secret.unwrap().starts_with("seti_"));
        let card = Card::from_json(&fixture("payment_method.json")).unwrap();
        assert_eq!(
            (
                card.brand.as_str(),
                card.last4.as_str(),
                card.exp_month,
                card.exp_year
            ),
            ("visa", "4242", 8, 2030)
        );
        let pi = PaymentIntent::from_json(&fixture("payment_intent.json")).unwrap();
        assert_eq!(pi.amount, 1099);
        assert_eq!(pi.currency, "usd");
        let sub = Subscription::from_json(&fixture("subscription.json")).unwrap();
        assert_eq!(sub.status, "active");
        assert_eq!(sub.item_id.as_deref(), Some("si_QXhVnC2h0Jczwc"));
        let inv = Invoice::from_json(&fixture("invoice.json")).unwrap();
        assert_eq!(inv.status.as_deref(), Some("draft"));
        assert_eq!(inv.currency, "usd");
        let ch = Charge::from_json(&fixture("charge.json")).unwrap();
        assert_eq!(ch.status, "succeeded");
        let portal = fixture("billing_portal.session.json");
        assert!(
            required(&portal, "url", "session")
                .unwrap()
                .starts_with("https://")
        );
    }

    #[test]
    fn localstripe_shapes_parse() {
        // localstripe exports `latest_charge` as the whole Charge and has no decline_code.
        let pi = PaymentIntent::from_json(&json!({
            "id": "pi_1", "status": "requires_payment_method", "amount": 2000,
            "currency": "usd", "customer": "cus_1", "payment_method": "pm_1",
            "latest_charge": {"id": "ch_1", "object": "charge", "status": "failed"},
            "last_payment_error": {"charge": "ch_1", "code": "card_declined",
                                   "message": "Your card was declined."},
            "metadata": {"payment_id": "pay_1", "workspace_id": "ws_1"}
        }))
        .unwrap();
        assert_eq!(pi.latest_charge.as_deref(), Some("ch_1"));
        let err = pi.last_payment_error.unwrap();
        assert_eq!(err.code.as_deref(), Some("card_declined"));
        assert_eq!(err.decline_code, None);
        assert_eq!(pi.metadata["payment_id"], "pay_1");
        // Its subscription items carry the plan object; its invoices have no number or URLs.
        let sub = Subscription::from_json(&json!({
            "id": "sub_1", "status": "active", "customer": "cus_1",
            "current_period_start": 1_700_000_000, "current_period_end": 1_702_592_000,
            "items": {"data": [{"id": "si_1", "plan": {"id": "basic", "object": "plan"}}]}
        }))
        .unwrap();
        assert_eq!(sub.plan_id.as_deref(), Some("basic"));
        assert_eq!(sub.current_period_end, Some(1_702_592_000));
        let inv = Invoice::from_json(&json!({
            "id": "in_1", "status": "paid", "amount_paid": 1000, "currency": "usd",
            "created": 1_700_000_000
        }))
        .unwrap();
        assert_eq!((inv.number, inv.hosted_invoice_url), (None, None));
    }

    #[test]
    fn missing_fields_are_decode_errors() {
        assert!(matches!(
            Customer::from_json(&json!({})),
            Err(StripeError::Decode(_))
        ));
        assert!(matches!(
            Card::from_json(&json!({"id": "pm_1", "card": {"brand": "visa"}})),
            Err(StripeError::Decode(_))
        ));
        assert!(path_id("pi_1").is_ok());
        assert!(path_id("../v1/customers").is_err());
        assert!(path_id("").is_err());
    }

    #[test]
    fn payment_intent_form() {
        let new = NewPaymentIntent {
            amount_minor: 2000,
            currency: "USD".into(),
            customer: "cus_1".into(),
            payment_method: Some("pm_1".into()),
            confirm: false,
            off_session: true,
            save_card: false,
            payment_id: "pay_1".into(),
            workspace_id: "ws_1".into(),
        };
        let pairs: Vec<(String, String)> = new.form().unwrap().pairs().to_vec();
        let expected = [
            ("amount", "2000"),
            ("currency", "usd"),
            ("customer", "cus_1"),
            ("payment_method", "pm_1"),
            ("confirm", "true"),
            ("off_session", "true"),
            ("metadata[payment_id]", "pay_1"),
            ("metadata[workspace_id]", "ws_1"),
        ];
        assert_eq!(
            pairs,
            expected.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
        let on_session = NewPaymentIntent {
            payment_method: None,
            off_session: false,
            ..new.clone()
        };
        let form = on_session.form().unwrap();
        assert_eq!(form.get("payment_method_types[0]"), Some("card"));
        assert_eq!(form.get("confirm"), None);
        assert_eq!(form.get("setup_future_usage"), None);
        let pay_and_save = NewPaymentIntent {
            save_card: true,
            ..on_session
        };
        let form = pay_and_save.form().unwrap();
        assert_eq!(form.get("setup_future_usage"), Some("off_session"));
        assert_eq!(form.get("confirm"), None);
        let zero = NewPaymentIntent {
            amount_minor: 0,
            ..new
        };
        assert!(matches!(zero.form(), Err(StripeError::BadInput(_))));
    }
}
