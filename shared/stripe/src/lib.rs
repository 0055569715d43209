//! A small Stripe API client for the billing product's Spin components (docs/billing-rules.md,
//! "Stripe").
//!
//! - [`form`]: Stripe's bracketed form parameters (`items[0][plan]`, `metadata[payment_id]`).
//! - [`error`]: one error type, mapped from Stripe's error object by `code` (a card's failure
//!   keeps its `code`, `decline_code` and message; what they mean for a payment is the ledger's
//!   decision, `ledger::settlement`).
//! - [`money`]: currency micro-units <-> Stripe minor units, refusing fractions.
//! - [`client`]: [`Client`] sends form-encoded requests through `spin_sdk::http::send` with
//!   `Authorization: Bearer`, a pinned `Stripe-Version`, an `Idempotency-Key` on every POST and
//!   a timeout.
//! - [`api`]: the calls the product makes (customers, SetupIntents, cards, PaymentIntents,
//!   subscriptions, invoices, billing-portal sessions), returning small structs.
//!
//! - [`webhook`]: a webhook delivery's `Stripe-Signature` check and its event, read (Stripe's
//!   wire format only; what an event means is the ledger's decision).
//!
//! The pure parts compile and are tested natively; the sending parts need a Spin host.

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]
#![warn(missing_docs)]

mod api;
pub mod client;
pub mod error;
pub mod form;
pub mod money;
pub mod webhook;

pub use api::{
    Card, Charge, Customer, FailedCharge, Invoice, NewPaymentIntent, PaymentError, PaymentIntent,
    Proration, SetupIntent, Subscription,
};
pub use client::{Client, DEFAULT_API_BASE, DEFAULT_TIMEOUT, STRIPE_VERSION};
pub use error::{CardError, Result, StripeError};
pub use form::Form;
