//! Stripe's webhook deliveries, as Stripe sends them: the `Stripe-Signature` check
//! ([`signature`]) and the event read into the objects the product looks at ([`event`]).
//!
//! Wire format only: what an event means for a payment, a refund or a plan is the ledger's
//! decision (`ledger::settlement`, `ledger::resolve`). Both parsers read untrusted bytes and are
//! fuzzed (`fuzz/fuzz_targets/stripe_signature.rs`, `stripe_event.rs`).

pub mod event;
pub mod signature;

pub use event::{
    DisputeObject, Event, Field, InvoiceObject, Object, PaymentIntentObject, RefundObject,
    SetupIntentObject, SubscriptionObject, parse_event,
};
pub use signature::{SignatureError, SignatureHeader, TOLERANCE_SECS, parse_header, verify};
