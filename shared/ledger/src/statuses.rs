//! The statuses the billing rules branch on, as enums: our payments' (stored in SQLite), the
//! workspace's subscription standing (stored), and Stripe's PaymentIntent and Subscription
//! statuses (parsed once from Stripe's strings, where a Stripe object is read).
//!
//! Every `parse` is total: a string we do not know becomes `Other` (Stripe adds statuses; our
//! own columns are CHECK-constrained, so `Other` never comes from SQLite) and the rules treat it
//! conservatively (see `settlement`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Implements `as_str`, `Display`, `PartialEq<&str>` (so `status == "failed"` still reads
/// naturally in tests) and a total `parse` for an enum whose variants map to fixed strings.
macro_rules! string_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? } else $other:ident) => {
        impl $name {
            /// The string Stripe or SQLite spells it with.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::$other => "other",
                }
            }

            /// Reads the string; an unknown one is `Other`.
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)+
                    _ => Self::$other,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

/// Where one of our payments is (`payments.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Created, not settled yet (Stripe is working on it, or the customer is).
    Pending,
    /// Credited, once; final.
    Succeeded,
    /// Failed; a later success may still credit it (the customer retries the PaymentIntent).
    Failed,
    /// Not a status we write (the column is CHECK-constrained).
    Other,
}

string_enum!(PaymentStatus {
    Pending => "pending",
    Succeeded => "succeeded",
    Failed => "failed",
} else Other);

/// What a payment is for (`payments.kind`), which says whether the customer is there to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    /// A manual top-up (R9): the customer is on the page and can complete 3-D Secure.
    Topup,
    /// An automatic recharge (R11): off-session, nobody to ask.
    AutoRecharge,
    /// Not a kind we write (the column is CHECK-constrained).
    Other,
}

string_enum!(PaymentKind {
    Topup => "topup",
    AutoRecharge => "auto_recharge",
} else Other);

impl PaymentKind {
    /// Whether the customer is present to act on the payment (confirm a new card, authenticate).
    pub fn customer_present(self) -> bool {
        self == Self::Topup
    }
}

/// A Stripe PaymentIntent's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    /// No card yet, or the last attempt failed (then `last_payment_error` says why).
    RequiresPaymentMethod,
    /// Waiting for a confirmation (Stripe.js, or the server).
    RequiresConfirmation,
    /// Waiting for the customer: 3-D Secure or another next action.
    RequiresAction,
    /// The bank is processing it.
    Processing,
    /// Authorized, not captured (we never ask for manual capture).
    RequiresCapture,
    /// Canceled: final, it can never succeed.
    Canceled,
    /// Paid: final.
    Succeeded,
    /// A status this code does not know.
    Other,
}

string_enum!(IntentStatus {
    RequiresPaymentMethod => "requires_payment_method",
    RequiresConfirmation => "requires_confirmation",
    RequiresAction => "requires_action",
    Processing => "processing",
    RequiresCapture => "requires_capture",
    Canceled => "canceled",
    Succeeded => "succeeded",
} else Other);

/// A Stripe Subscription's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    /// The first invoice is not paid yet.
    Incomplete,
    /// The first invoice was never paid; the subscription is dead.
    IncompleteExpired,
    /// In a trial period.
    Trialing,
    /// Paid and running.
    Active,
    /// The latest invoice failed; Stripe retries it.
    PastDue,
    /// Ended.
    Canceled,
    /// Retries exhausted, left open.
    Unpaid,
    /// Paused (trial ended without a payment method).
    Paused,
    /// A status this code does not know.
    Other,
}

string_enum!(SubscriptionStatus {
    Incomplete => "incomplete",
    IncompleteExpired => "incomplete_expired",
    Trialing => "trialing",
    Active => "active",
    PastDue => "past_due",
    Canceled => "canceled",
    Unpaid => "unpaid",
    Paused => "paused",
} else Other);

impl SubscriptionStatus {
    /// The standing a workspace takes from this Stripe status: `active`/`trialing` are in
    /// good standing, `past_due`/`unpaid` past due; anything else changes nothing (an ended
    /// subscription is handled by `customer.subscription.deleted`, not by its status).
    pub fn standing(self) -> Option<SubscriptionStanding> {
        match self {
            Self::Active | Self::Trialing => Some(SubscriptionStanding::Active),
            Self::PastDue | Self::Unpaid => Some(SubscriptionStanding::PastDue),
            _ => None,
        }
    }
}

/// A workspace's subscription standing (`workspaces.subscription_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStanding {
    /// Never subscribed.
    Unsubscribed,
    /// In force and paid.
    Active,
    /// The last invoice is unpaid.
    PastDue,
    /// The subscription ended.
    Canceled,
    /// Not a value we write (the column is CHECK-constrained).
    Other,
}

string_enum!(SubscriptionStanding {
    Unsubscribed => "none",
    Active => "active",
    PastDue => "past_due",
    Canceled => "canceled",
} else Other);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_spell_back() {
        for status in [
            PaymentStatus::Pending,
            PaymentStatus::Succeeded,
            PaymentStatus::Failed,
        ] {
            assert_eq!(PaymentStatus::parse(status.as_str()), status);
        }
        assert_eq!(PaymentStatus::parse("refunded"), PaymentStatus::Other);
        assert_eq!(
            PaymentKind::parse("auto_recharge"),
            PaymentKind::AutoRecharge
        );
        assert!(PaymentKind::Topup.customer_present());
        assert!(!PaymentKind::AutoRecharge.customer_present());
        assert_eq!(
            IntentStatus::parse("requires_payment_method"),
            IntentStatus::RequiresPaymentMethod
        );
        assert_eq!(IntentStatus::parse("canceled"), IntentStatus::Canceled);
        assert_eq!(IntentStatus::parse("cancelled"), IntentStatus::Other);
        assert_eq!(
            SubscriptionStanding::parse("past_due"),
            SubscriptionStanding::PastDue
        );
        assert!(PaymentStatus::Failed == "failed");
        assert_eq!(PaymentStatus::Pending.to_string(), "pending");
    }

    #[test]
    fn serde_spells_as_sqlite() {
        assert_eq!(
            serde_json::to_value(PaymentStatus::Succeeded).ok(),
            Some(serde_json::json!("succeeded"))
        );
        assert_eq!(
            serde_json::to_value(PaymentKind::AutoRecharge).ok(),
            Some(serde_json::json!("auto_recharge"))
        );
    }

    #[test]
    fn stripe_subscription_status_to_standing() {
        use SubscriptionStanding as S;
        let standing = |text: &str| SubscriptionStatus::parse(text).standing();
        assert_eq!(standing("active"), Some(S::Active));
        assert_eq!(standing("trialing"), Some(S::Active));
        assert_eq!(standing("past_due"), Some(S::PastDue));
        assert_eq!(standing("unpaid"), Some(S::PastDue));
        for unchanged in [
            "incomplete",
            "incomplete_expired",
            "canceled",
            "paused",
            "new",
        ] {
            assert_eq!(standing(unchanged), None, "{unchanged}");
        }
    }
}
