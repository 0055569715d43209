//! A small Stripe API client for the billing product's Spin components (DESIGN section 7).
//!
//! - [`form`]: Stripe's bracketed form parameters (`items[0][plan]`, `metadata[payment_id]`).
//! - [`error`]: one error type, mapped from Stripe's error object by `code`/`decline_code`.
//! - [`money`]: currency micro-units <-> Stripe minor units, refusing fractions.
//! - [`client`]: [`Client`] sends form-encoded requests through `spin_sdk::http::send` with
//!   `Authorization: Bearer`, a pinned `Stripe-Version`, an `Idempotency-Key` on every POST and
//!   a timeout.
//! - [`api`]: the calls the product makes (customers, SetupIntents, cards, PaymentIntents,
//!   subscriptions, invoices, billing-portal sessions), returning small structs.
//!
//! The pure parts compile and are tested natively; the sending parts need a Spin host.

#![warn(missing_docs)]

pub mod advice;
mod api;
pub mod client;
pub mod error;
pub mod form;
pub mod money;

pub use advice::{
    ADVICE_AUTHENTICATION, ADVICE_DECLINED, ADVICE_EXPIRED, ADVICE_TEMPORARY, advice,
    failure_message,
};
pub use api::{
    Card, Charge, Customer, Invoice, NewPaymentIntent, PaymentError, PaymentIntent, Proration,
    SetupIntent, Subscription,
};
pub use client::{Client, DEFAULT_API_BASE, DEFAULT_TIMEOUT, STRIPE_VERSION};
pub use error::{
    CardError, Result, SOFT_DECLINE_CODES, StripeError, is_hard_decline, product_code,
};
pub use form::Form;
