//! Which of our objects a Stripe object is about: the payment a PaymentIntent settles, the
//! workspace an invoice or subscription event belongs to. The webhook, the synchronous answers
//! and the reconciliation all find them here, the same way.

use crate::payments;
use crate::storage::Storage;
use crate::workspace;
use crate::{LedgerError, Result};

/// The Stripe customer and subscription an invoice or subscription event names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StripeOwner {
    /// `cus_...`.
    pub customer: Option<String>,
    /// `sub_...`.
    pub subscription: Option<String>,
}

/// The workspace a subscription or invoice belongs to: the one recording the subscription, else
/// the customer's, unless that workspace records a different subscription (an event about an
/// old subscription of the same customer must not touch the current one). `None` when neither
/// is ours.
pub async fn workspace_of<S: Storage>(db: &S, owner: &StripeOwner) -> Result<Option<String>> {
    if let Some(subscription) = &owner.subscription
        && let Some(ws) = workspace::find_by_stripe_subscription(db, subscription).await?
    {
        return Ok(Some(ws));
    }
    let Some(customer) = &owner.customer else {
        return Ok(None);
    };
    let Some(ws) = workspace::find_by_stripe_customer(db, customer).await? else {
        return Ok(None);
    };
    if let Some(subscription) = &owner.subscription {
        let state = workspace::get(db, &ws).await?;
        if state
            .stripe_subscription_id
            .as_ref()
            .is_some_and(|current| current != subscription)
        {
            return Ok(None);
        }
    }
    Ok(Some(ws))
}

/// Records `intent_id` on `payment_id` unless the payment already has another PaymentIntent:
/// `false` then (nothing is to be settled from this one). Recording it also marks the payment
/// as looked at now, which moves a pending one to the back of the reconciliation queue.
pub async fn attach_intent<S: Storage>(
    db: &S,
    payment_id: &str,
    intent_id: &str,
    real_now_secs: i64,
) -> Result<bool> {
    match payments::attach_intent(db, payment_id, intent_id, real_now_secs).await {
        Ok(()) => Ok(true),
        Err(LedgerError::Conflict { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Our payment a PaymentIntent settles: the one it is attached to, else the one its
/// `metadata[payment_id]` names (attached now: it was created before the PaymentIntent). `None`
/// when it is not ours: no such payment, or that payment has another PaymentIntent.
pub async fn payment_of_intent<S: Storage>(
    db: &S,
    intent_id: &str,
    metadata_payment_id: Option<&str>,
    real_now_secs: i64,
) -> Result<Option<String>> {
    if let Some(payment) = payments::find_by_intent(db, intent_id).await? {
        return Ok(Some(payment.id));
    }
    let Some(payment_id) = metadata_payment_id else {
        return Ok(None);
    };
    // `attach_intent` answers a conflict for an unknown payment too (no row to update).
    let attached = attach_intent(db, payment_id, intent_id, real_now_secs).await?;
    Ok(attached.then(|| payment_id.to_owned()))
}
