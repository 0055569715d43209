//! Which of our objects a Stripe object is about: the payment a PaymentIntent settles, the
//! workspace an invoice or subscription event belongs to. The webhook, the synchronous answers
//! and the reconciliation all find them here, the same way.

use crate::Result;
use crate::payments::{self, Payment};
use crate::storage::Storage;
use crate::workspace;

/// The Stripe customer and subscription an invoice or subscription event names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StripeOwner {
    /// `cus_...`.
    pub customer: Option<String>,
    /// `sub_...`.
    pub subscription: Option<String>,
}

/// Whether an invoice pays for a plan cycle (and so may grant credits, R13): a subscription's
/// invoice (it names a subscription, or Stripe bills it for one). A one-off invoice must never
/// grant credits.
pub fn invoice_pays_plan_cycle(owner: &StripeOwner, billing_reason: Option<&str>) -> bool {
    owner.subscription.is_some() || billing_reason.is_some_and(|r| r.starts_with("subscription"))
}

/// The workspace a subscription or invoice belongs to: the one recording the subscription, else
/// the customer's, unless that workspace records a different subscription or is creating one (an
/// event about an old subscription of the same customer must not touch the current one). `None`
/// when neither is ours.
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
    if let Some(subscription) = &owner.subscription
        && workspace::subscription_or_claim(db, &ws)
            .await?
            .is_some_and(|current| current != *subscription)
    {
        return Ok(None);
    }
    Ok(Some(ws))
}

/// Our payment a PaymentIntent is about: the one it is attached to, else the one its
/// `metadata[payment_id]` names (created before the PaymentIntent; `payments::settle` attaches
/// it). `None` when it is not ours: no such payment, or that payment has another PaymentIntent.
/// One read.
pub async fn payment_of_intent<S: Storage>(
    db: &S,
    intent_id: &str,
    metadata_payment_id: Option<&str>,
) -> Result<Option<Payment>> {
    let found = payments::by_intent_or_id(db, intent_id, metadata_payment_id).await?;
    Ok(found.filter(|payment| {
        payment
            .payment_intent_id
            .as_deref()
            .is_none_or(|own| own == intent_id)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoices_that_pay_plan_cycles() {
        let owner = |subscription: Option<&str>| StripeOwner {
            customer: Some("cus_1".into()),
            subscription: subscription.map(str::to_owned),
        };
        assert!(invoice_pays_plan_cycle(&owner(Some("sub_1")), None));
        assert!(invoice_pays_plan_cycle(
            &owner(Some("sub_1")),
            Some("manual")
        ));
        for reason in [
            "subscription_cycle",
            "subscription_create",
            "subscription_update",
        ] {
            assert!(
                invoice_pays_plan_cycle(&owner(None), Some(reason)),
                "{reason}"
            );
        }
        assert!(!invoice_pays_plan_cycle(&owner(None), Some("manual")));
        assert!(!invoice_pays_plan_cycle(&owner(None), None));
    }
}
