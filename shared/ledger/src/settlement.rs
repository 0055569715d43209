//! What a payment becomes from what Stripe reports (R9, R11, R21): the one classification of
//! card failures, and the one settlement of a PaymentIntent, a card error or a failed request,
//! used by the synchronous top-up, the webhook, the auto-recharge charge and the reconciliation
//! alike, so that whichever reports first, the payment ends the same way.
//!
//! Pure: the inputs are Stripe's words (codes, statuses) already read from the wire, gathered in
//! a [`Report`]; the output is a [`Settlement`], which `payments::settle` writes in the same
//! transaction that reads the payment (the caller only maps it to its answer). Nothing here
//! knows HTTP.

use crate::statuses::{IntentStatus, PaymentKind};

/// Declined by the bank.
pub const ADVICE_DECLINED: &str = "Card declined: Your bank has declined the transaction. Check that the card has sufficient funds and isn't blocked for online purchases.";
/// The card expired.
pub const ADVICE_EXPIRED: &str =
    "Card expired: Update your payment method in Billing > Payment method.";
/// Authentication (3-D Secure) the customer must complete.
pub const ADVICE_AUTHENTICATION: &str = "The card requires authentication: complete the payment with your bank, or update your payment method.";
/// Everything that is not the card's fault.
pub const ADVICE_TEMPORARY: &str = "Temporary error: Wait a few minutes and try again.";

/// The failure message of a payment that never reached Stripe (R21's reconciliation gives up
/// on it rather than risk a second charge).
pub const NOT_STARTED_MESSAGE: &str = "The payment was not started; please try again.";
/// The failure message of a recharge with no saved card to charge.
pub const NO_SAVED_CARD_MESSAGE: &str =
    "There is no saved payment method to charge; save one again.";
/// Stripe's words for a PaymentIntent canceled without a failed attempt.
pub const CANCELED_INTENT_WORDS: &str = "The PaymentIntent was canceled.";

/// Stripe keeps idempotency keys for 24 hours; a charge is retried with the same key only well
/// inside that (23 h), never after: a retry then could charge twice.
pub const IDEMPOTENCY_RETRY_WINDOW_SECS: i64 = 23 * 3600;
/// How far before a payment's creation the reconciliation looks for its charge (clocks differ).
pub const CHARGE_SEARCH_SLACK_SECS: i64 = 60;

/// `decline_code`s of `card_declined` worth retrying later without the customer (soft declines):
/// the issuer says to retry, or the condition is temporary (funds, velocity limits). Retries are
/// bounded by the auto-recharge daily cap. Every other `card_declined` is hard (including
/// `generic_decline` and a missing decline code, as localstripe sends).
pub const SOFT_DECLINE_CODES: &[&str] = &[
    "approve_with_id",
    "card_velocity_exceeded",
    "insufficient_funds",
    "issuer_not_available",
    "processing_error",
    "reenter_transaction",
    "try_again_later",
    "withdrawal_count_limit_exceeded",
];

/// The code a failed charge without Stripe's `failure_code` is read as.
pub const DEFAULT_CHARGE_FAILURE_CODE: &str = "card_declined";

/// Why a subscription's first invoice is unpaid, as Stripe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpaidInvoice<'a> {
    /// No failed charge: not attempted, or the bank waits for the customer (3-D Secure).
    NoFailedCharge,
    /// Its charge failed, with Stripe's `failure_code` when it gave one.
    ChargeFailed(Option<&'a str>),
    /// Stripe refused to create the subscription with a card error of this `code`.
    CardError(&'a str),
}

/// Whether a refund Stripe reports takes credits back (R12): any refund but one that failed or
/// was canceled (a pending refund is on its way: the money is leaving).
pub fn refund_takes_credits_back(refund_status: Option<&str>) -> bool {
    !matches!(refund_status, Some("failed" | "canceled"))
}

/// The product's failure codes of a payment (R9), stored in `payments.failure_code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCode {
    /// The bank declined the card (and every card code we do not single out).
    CardDeclined,
    /// The card expired.
    ExpiredCard,
    /// The bank wants 3-D Secure.
    AuthenticationRequired,
    /// Not the card's fault: Stripe, the network, processing errors, our configuration.
    PaymentProcessingError,
}

impl FailureCode {
    /// The contract's snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CardDeclined => "card_declined",
            Self::ExpiredCard => "expired_card",
            Self::AuthenticationRequired => "authentication_required",
            Self::PaymentProcessingError => "payment_processing_error",
        }
    }

    /// Reads a stored failure code; anything else (or none) is a processing error.
    pub fn parse(stored: Option<&str>) -> Self {
        match stored {
            Some("card_declined") => Self::CardDeclined,
            Some("expired_card") => Self::ExpiredCard,
            Some("authentication_required") => Self::AuthenticationRequired,
            _ => Self::PaymentProcessingError,
        }
    }

    /// The product code of a card failure with Stripe's `code`: `expired_card`,
    /// `authentication_required`, `payment_processing_error` (temporary: processing errors, the
    /// decline rate limit, no code at all) or `card_declined` (every other card code).
    pub fn of_stripe_code(stripe_code: Option<&str>) -> Self {
        match stripe_code {
            Some("expired_card") => Self::ExpiredCard,
            Some("authentication_required" | "payment_intent_authentication_failure") => {
                Self::AuthenticationRequired
            }
            Some("processing_error" | "card_decline_rate_limit_exceeded") | None => {
                Self::PaymentProcessingError
            }
            Some(_) => Self::CardDeclined,
        }
    }

    /// Why a subscription's first invoice was not paid: the code of its failed charge (Stripe's
    /// `failure_code`, or a card error's `code`), where anything not the card's counts as a
    /// decline, since the customer must act either way; no failed charge means the bank is
    /// waiting for the customer (3-D Secure).
    pub fn of_refused_invoice(charge_failure_code: Option<&str>) -> Self {
        match charge_failure_code {
            None => Self::AuthenticationRequired,
            Some(code) => match Self::of_stripe_code(Some(code)) {
                Self::PaymentProcessingError => Self::CardDeclined,
                code => code,
            },
        }
    }

    /// Why a subscription's first invoice was not paid, from what Stripe reports: a failed
    /// charge without a code counts as a decline (`card_declined`).
    pub fn of_unpaid_invoice(unpaid: UnpaidInvoice<'_>) -> Self {
        match unpaid {
            UnpaidInvoice::NoFailedCharge => Self::of_refused_invoice(None),
            UnpaidInvoice::ChargeFailed(code) => {
                Self::of_refused_invoice(Some(code.unwrap_or(DEFAULT_CHARGE_FAILURE_CODE)))
            }
            UnpaidInvoice::CardError(code) => Self::of_refused_invoice(Some(code)),
        }
    }

    /// Whether the card (rather than Stripe or us) refused: the contract answers these 402.
    pub fn is_card_fault(self) -> bool {
        self != Self::PaymentProcessingError
    }

    /// What we tell the customer: the help centre's advice ("Error processing payment", R9).
    pub fn advice(self) -> &'static str {
        match self {
            Self::CardDeclined => ADVICE_DECLINED,
            Self::ExpiredCard => ADVICE_EXPIRED,
            Self::AuthenticationRequired => ADVICE_AUTHENTICATION,
            Self::PaymentProcessingError => ADVICE_TEMPORARY,
        }
    }
}

/// Whether a card failure with Stripe's `code` and `decline_code` is a hard decline: retrying the
/// same card off-session cannot succeed (expired or wrong card, lost or stolen, a non-retryable
/// decline, authentication the absent customer must complete, any code we do not know). Soft:
/// processing errors, rate limits, retryable declines, and a failure without a code.
pub fn is_hard_decline(code: Option<&str>, decline_code: Option<&str>) -> bool {
    match code {
        None | Some("processing_error" | "card_decline_rate_limit_exceeded") => false,
        Some("card_declined") => !decline_code.is_some_and(|d| SOFT_DECLINE_CODES.contains(&d)),
        Some(_) => true,
    }
}

/// The failure message stored with a payment: the advice, then Stripe's own words in brackets.
pub fn failure_message(code: FailureCode, stripe_words: Option<&str>) -> String {
    match stripe_words.map(str::trim) {
        Some(words) if !words.is_empty() => format!("{} ({words})", code.advice()),
        _ => code.advice().to_owned(),
    }
}

/// A card failure as Stripe reports it: a declined charge's error, or a PaymentIntent's
/// `last_payment_error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CardReport<'a> {
    /// Stripe's `code`, e.g. `card_declined`.
    pub code: Option<&'a str>,
    /// Stripe's `decline_code`, e.g. `insufficient_funds`.
    pub decline_code: Option<&'a str>,
    /// Stripe's message, e.g. "Your card was declined."
    pub message: Option<&'a str>,
}

/// Why a payment failed, as `payments::settle` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The product code (R9).
    pub code: FailureCode,
    /// The sentence stored and shown with it.
    pub message: String,
    /// Whether retrying the same card off-session is pointless (R11: auto-recharge turns off).
    pub hard_decline: bool,
}

impl Failure {
    /// A card's failure: product code, advice with Stripe's words, hard or soft.
    pub fn of_card(report: CardReport<'_>) -> Self {
        let code = FailureCode::of_stripe_code(report.code);
        Self {
            code,
            message: failure_message(code, report.message),
            hard_decline: is_hard_decline(report.code, report.decline_code),
        }
    }

    /// A failure that is not the card's, with Stripe's words if any.
    pub fn processing(stripe_words: Option<&str>, hard_decline: bool) -> Self {
        let code = FailureCode::PaymentProcessingError;
        Self {
            code,
            message: failure_message(code, stripe_words),
            hard_decline,
        }
    }

    /// A canceled PaymentIntent: its last attempt's failure if it had one, else a soft
    /// processing failure (canceled is final at Stripe: it can never succeed).
    pub fn of_canceled_intent(last_error: Option<CardReport<'_>>) -> Self {
        match last_error {
            Some(report) => Self::of_card(report),
            None => Self::processing(Some(CANCELED_INTENT_WORDS), false),
        }
    }

    /// An off-session charge the bank wants authenticated: nobody is there to do it, so it is
    /// hard (auto-recharge turns off until the customer acts).
    pub fn authentication_off_session() -> Self {
        let code = FailureCode::AuthenticationRequired;
        Self {
            code,
            message: failure_message(code, None),
            hard_decline: true,
        }
    }

    /// A recharge with no saved card (or customer) to charge: hard.
    pub fn no_saved_card() -> Self {
        Self {
            code: FailureCode::PaymentProcessingError,
            message: NO_SAVED_CARD_MESSAGE.to_owned(),
            hard_decline: true,
        }
    }

    /// An amount Stripe cannot charge in the currency (a configuration no retry can fix): hard.
    pub fn not_chargeable() -> Self {
        Self::processing(None, true)
    }

    /// A payment never started at Stripe that may no longer be retried: soft (a late webhook
    /// can still credit it if the first attempt did reach Stripe).
    pub fn not_started() -> Self {
        Self {
            code: FailureCode::PaymentProcessingError,
            message: NOT_STARTED_MESSAGE.to_owned(),
            hard_decline: false,
        }
    }
}

/// What to do with a payment after Stripe's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The money is in: credit it (once).
    Succeed,
    /// Settle it failed.
    Fail(Failure),
    /// Stripe is still working on it (processing): it stays pending.
    Wait,
    /// It stays pending for the customer, who is there: to confirm a new card with Stripe.js
    /// (`authentication: false`, answered with the client secret) or to complete 3-D Secure
    /// (`authentication: true`, answered 402 `authentication_required`).
    AwaitCustomer {
        /// Whether the bank asked for authentication.
        authentication: bool,
    },
    /// Stripe did not carry out the request (unreachable, or refused a request the customer
    /// can retry): it stays pending; the reconciliation (R21) or a retry settles it.
    StripeFailed,
}

/// A PaymentIntent as read from Stripe (the synchronous answer, a retry's read-back, or the
/// reconciliation's), reduced to what settlement reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntentReport<'a> {
    /// Its status.
    pub status: IntentStatus,
    /// Whether it has a payment method (a saved card being charged) rather than waiting for one.
    pub has_payment_method: bool,
    /// Why its last attempt failed, if it did.
    pub last_error: Option<CardReport<'a>>,
}

/// Settles a payment of `kind` from its PaymentIntent. A top-up's customer is present: anything
/// waiting for them stays pending. A recharge is off-session: authentication fails it hard, and
/// anything neither done, in progress nor failed fails it soft (re-armed, bounded by the daily
/// cap). A failed attempt and a canceled intent fail either kind.
fn settle_intent(intent: &IntentReport<'_>, kind: PaymentKind) -> Settlement {
    use IntentStatus::{
        Canceled, Other, Processing, RequiresAction, RequiresCapture, RequiresConfirmation,
        RequiresPaymentMethod, Succeeded,
    };
    let present = kind.customer_present();
    match (intent.status, intent.last_error) {
        (Succeeded, _) => Settlement::Succeed,
        (Processing | RequiresCapture, _) => Settlement::Wait,
        (RequiresAction | RequiresConfirmation, _) if present => Settlement::AwaitCustomer {
            authentication: intent.has_payment_method,
        },
        (RequiresAction | RequiresConfirmation, _) => {
            Settlement::Fail(Failure::authentication_off_session())
        }
        (Canceled, last_error) => Settlement::Fail(Failure::of_canceled_intent(last_error)),
        (RequiresPaymentMethod, Some(report)) => Settlement::Fail(Failure::of_card(report)),
        (RequiresPaymentMethod | Other, _) if present => Settlement::AwaitCustomer {
            authentication: false,
        },
        (RequiresPaymentMethod | Other, _) => Settlement::Fail(Failure::processing(None, false)),
    }
}

/// Whether settling a card error of a `kind` payment depends on its PaymentIntent's current
/// status (read it back for [`Report::CardError`]): only authentication a present customer may
/// complete.
pub fn card_error_needs_intent(report: &CardReport<'_>, kind: PaymentKind) -> bool {
    kind.customer_present()
        && FailureCode::of_stripe_code(report.code) == FailureCode::AuthenticationRequired
}

/// Settles a payment whose confirmed charge Stripe answered with a card error. `intent` is the
/// PaymentIntent's status as read back, when [`card_error_needs_intent`] asked for it and it
/// could be read: a present customer asked to authenticate an intent still open keeps it pending
/// (3-D Secure); everything else fails with the card's classification.
fn settle_card_error(
    report: CardReport<'_>,
    kind: PaymentKind,
    intent: Option<IntentStatus>,
) -> Settlement {
    if card_error_needs_intent(&report, kind)
        && intent.is_some_and(|status| status != IntentStatus::Canceled)
    {
        return Settlement::AwaitCustomer {
            authentication: true,
        };
    }
    Settlement::Fail(Failure::of_card(report))
}

/// What Stripe reported about a payment, whoever observed it: the synchronous answer of a
/// top-up or a recharge, the reconciliation's read, or a webhook. `payments::settle` classifies
/// it for the payment's kind ([`Report::settlement`]) and writes the outcome in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report<'a> {
    /// Stripe says the PaymentIntent succeeded (`payment_intent.succeeded`).
    Succeeded,
    /// A PaymentIntent as read from Stripe (an answer, a retry's or the reconciliation's read, or
    /// `payment_intent.canceled`).
    Intent(IntentReport<'a>),
    /// The charge was refused by the card (a confirmed charge's card error, or
    /// `payment_intent.payment_failed`), with the PaymentIntent's status when it was read back
    /// because [`card_error_needs_intent`] asked for it.
    CardError {
        /// The card's answer.
        report: CardReport<'a>,
        /// The PaymentIntent's status as read back, if it was.
        intent: Option<IntentStatus>,
    },
    /// The charge request failed without a card's answer.
    RequestFailed(RequestFailure),
    /// The reconciliation could not read the payment's PaymentIntent.
    IntentUnreadable(RequestFailure),
    /// The PaymentIntent succeeded, but the card the payment saves could not be read from Stripe
    /// yet: a payment is never credited without the card it saves, so it stays pending for the
    /// webhook or the reconciliation.
    CardToSaveUnreadable,
    /// A failure decided before Stripe was asked or answered (no saved card, an amount Stripe
    /// cannot charge, a payment never started): [`Failure::no_saved_card`] and its siblings.
    Failed(Failure),
}

impl Report<'_> {
    /// Whether Stripe reports the money in: the caller then reads the card that paid (outside
    /// the ledger lock) before settling.
    pub fn is_paid(&self) -> bool {
        match self {
            Self::Succeeded => true,
            Self::Intent(intent) => intent.status == IntentStatus::Succeeded,
            _ => false,
        }
    }

    /// What this report means for a payment of `kind`.
    pub fn settlement(&self, kind: PaymentKind) -> Settlement {
        match self {
            Self::Succeeded => Settlement::Succeed,
            Self::Intent(intent) => settle_intent(intent, kind),
            Self::CardError { report, intent } => settle_card_error(*report, kind, *intent),
            Self::RequestFailed(failure) => settle_request_failure(*failure, kind),
            Self::IntentUnreadable(failure) => settle_unreadable_intent(*failure),
            Self::CardToSaveUnreadable => Settlement::StripeFailed,
            Self::Failed(failure) => Settlement::Fail(failure.clone()),
        }
    }
}

/// How a Stripe request failed, other than by the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    /// No usable answer: unreachable, timed out, Stripe failed or rate-limited us, a concurrent
    /// request holds the idempotency key, our key was refused, or the answer was not understood.
    /// The charge may have happened (or may happen on a retry with the same key).
    Unanswered,
    /// Stripe refused the request itself (a parameter, a missing object, an amount it cannot
    /// take): the same request cannot succeed.
    Refused,
}

/// Settles a payment whose charge request failed without a card's answer. An unanswered request
/// leaves it pending (the reconciliation reads what happened). A refused one leaves a top-up
/// pending too (the customer retries with the same `Idempotency-Key`, and the reconciliation
/// settles it otherwise), but fails a recharge hard: nobody would retry, and retrying forever
/// would be a storm.
fn settle_request_failure(failure: RequestFailure, kind: PaymentKind) -> Settlement {
    match failure {
        RequestFailure::Refused if !kind.customer_present() => {
            Settlement::Fail(Failure::processing(None, true))
        }
        RequestFailure::Unanswered | RequestFailure::Refused => Settlement::StripeFailed,
    }
}

/// What the reconciliation does with a payment whose PaymentIntent could not be read: unanswered,
/// try again on a later pass; refused (the intent is not readable with our key), leave it pending
/// and move it to the back of the queue.
fn settle_unreadable_intent(failure: RequestFailure) -> Settlement {
    match failure {
        RequestFailure::Unanswered => Settlement::StripeFailed,
        RequestFailure::Refused => Settlement::Wait,
    }
}

/// What the reconciliation does with a pending payment that has no PaymentIntent and whose charge
/// was not found at Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unstarted {
    /// Charge it again with the same idempotency key (a recharge, within the window).
    ChargeAgain,
    /// Give up: settle it failed.
    Fail(Failure),
}

/// A pending payment never seen at Stripe (R21): a recharge created less than
/// [`IDEMPOTENCY_RETRY_WINDOW_SECS`] ago is charged again with the same key; anything else (a
/// manual top-up, whose customer is gone, or a recharge too old) fails soft.
pub fn reconcile_unstarted(kind: PaymentKind, created_at_secs: i64, now: i64) -> Unstarted {
    if kind == PaymentKind::AutoRecharge && now - created_at_secs < IDEMPOTENCY_RETRY_WINDOW_SECS {
        Unstarted::ChargeAgain
    } else {
        Unstarted::Fail(Failure::not_started())
    }
}

/// Since when (Unix seconds) the reconciliation looks for a payment's lost charge: a minute
/// before it was created.
pub fn charge_search_since(created_at_secs: i64) -> i64 {
    created_at_secs - CHARGE_SEARCH_SLACK_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPUP: PaymentKind = PaymentKind::Topup;
    const RECHARGE: PaymentKind = PaymentKind::AutoRecharge;

    fn card<'a>(code: &'a str, decline: Option<&'a str>, message: &'a str) -> CardReport<'a> {
        CardReport {
            code: Some(code),
            decline_code: decline,
            message: Some(message),
        }
    }

    fn intent(status: &str, has_payment_method: bool) -> IntentReport<'static> {
        IntentReport {
            status: IntentStatus::parse(status),
            has_payment_method,
            last_error: None,
        }
    }

    #[test]
    fn hard_and_soft_declines() {
        assert!(is_hard_decline(Some("expired_card"), None));
        assert!(is_hard_decline(Some("incorrect_number"), None));
        assert!(is_hard_decline(Some("incorrect_cvc"), None));
        assert!(is_hard_decline(Some("card_declined"), None), "localstripe");
        assert!(is_hard_decline(Some("card_declined"), Some("lost_card")));
        assert!(is_hard_decline(Some("card_declined"), Some("stolen_card")));
        assert!(is_hard_decline(
            Some("card_declined"),
            Some("generic_decline")
        ));
        assert!(is_hard_decline(
            Some("authentication_required"),
            Some("authentication_required")
        ));
        assert!(is_hard_decline(Some("a_code_from_2030"), None), "unknown");
        for soft in SOFT_DECLINE_CODES {
            assert!(
                !is_hard_decline(Some("card_declined"), Some(soft)),
                "{soft}"
            );
        }
        assert!(!is_hard_decline(Some("processing_error"), None));
        assert!(!is_hard_decline(
            Some("card_decline_rate_limit_exceeded"),
            None
        ));
        assert!(!is_hard_decline(None, None));
    }

    #[test]
    fn product_codes() {
        let of = |code: Option<&str>| FailureCode::of_stripe_code(code).as_str();
        assert_eq!(of(Some("card_declined")), "card_declined");
        assert_eq!(of(Some("incorrect_cvc")), "card_declined");
        assert_eq!(of(Some("expired_card")), "expired_card");
        assert_eq!(
            of(Some("authentication_required")),
            "authentication_required"
        );
        assert_eq!(
            of(Some("payment_intent_authentication_failure")),
            "authentication_required"
        );
        assert_eq!(of(Some("processing_error")), "payment_processing_error");
        assert_eq!(
            of(Some("card_decline_rate_limit_exceeded")),
            "payment_processing_error"
        );
        assert_eq!(of(None), "payment_processing_error");
        assert_eq!(
            FailureCode::parse(Some("expired_card")),
            FailureCode::ExpiredCard
        );
        assert_eq!(
            FailureCode::parse(Some("something_else")),
            FailureCode::PaymentProcessingError
        );
        assert_eq!(
            FailureCode::parse(None),
            FailureCode::PaymentProcessingError
        );
        assert!(FailureCode::CardDeclined.is_card_fault());
        assert!(!FailureCode::PaymentProcessingError.is_card_fault());
    }

    #[test]
    fn refused_first_invoices() {
        let of = |code: Option<&str>| FailureCode::of_refused_invoice(code);
        assert_eq!(of(None), FailureCode::AuthenticationRequired);
        assert_eq!(of(Some("card_declined")), FailureCode::CardDeclined);
        assert_eq!(of(Some("expired_card")), FailureCode::ExpiredCard);
        assert_eq!(of(Some("processing_error")), FailureCode::CardDeclined);
        assert_eq!(
            of(Some("authentication_required")),
            FailureCode::AuthenticationRequired
        );
    }

    #[test]
    fn unpaid_first_invoices() {
        use UnpaidInvoice::{CardError, ChargeFailed, NoFailedCharge};
        let of = FailureCode::of_unpaid_invoice;
        assert_eq!(of(NoFailedCharge), FailureCode::AuthenticationRequired);
        assert_eq!(of(ChargeFailed(None)), FailureCode::CardDeclined, "no code");
        assert_eq!(
            of(ChargeFailed(Some("expired_card"))),
            FailureCode::ExpiredCard
        );
        assert_eq!(
            of(ChargeFailed(Some("processing_error"))),
            FailureCode::CardDeclined
        );
        assert_eq!(
            of(CardError("authentication_required")),
            FailureCode::AuthenticationRequired
        );
    }

    #[test]
    fn refunds_that_take_credits_back() {
        for status in [
            None,
            Some("succeeded"),
            Some("pending"),
            Some("requires_action"),
        ] {
            assert!(refund_takes_credits_back(status), "{status:?}");
        }
        for status in [Some("failed"), Some("canceled")] {
            assert!(!refund_takes_credits_back(status), "{status:?}");
        }
    }

    #[test]
    fn advice_and_messages() {
        assert!(
            FailureCode::CardDeclined
                .advice()
                .starts_with("Card declined")
        );
        assert_eq!(
            FailureCode::PaymentProcessingError.advice(),
            ADVICE_TEMPORARY
        );
        assert_eq!(
            failure_message(FailureCode::ExpiredCard, Some("Your card has expired.")),
            format!("{ADVICE_EXPIRED} (Your card has expired.)")
        );
        assert_eq!(
            failure_message(FailureCode::ExpiredCard, Some(" ")),
            ADVICE_EXPIRED
        );
        let failure = Failure::of_card(card(
            "card_declined",
            Some("stolen_card"),
            "Your card was declined.",
        ));
        assert_eq!(
            failure,
            Failure {
                code: FailureCode::CardDeclined,
                message: format!("{ADVICE_DECLINED} (Your card was declined.)"),
                hard_decline: true,
            }
        );
        let soft = Failure::of_card(card(
            "card_declined",
            Some("insufficient_funds"),
            "Your card has insufficient funds.",
        ));
        assert!(!soft.hard_decline);
        assert_eq!(soft.code, FailureCode::CardDeclined);
        assert_eq!(
            Failure::of_canceled_intent(None),
            Failure {
                code: FailureCode::PaymentProcessingError,
                message: format!("{ADVICE_TEMPORARY} ({CANCELED_INTENT_WORDS})"),
                hard_decline: false,
            }
        );
        assert_eq!(Failure::not_started().message, NOT_STARTED_MESSAGE);
        assert!(!Failure::not_started().hard_decline);
        assert!(Failure::no_saved_card().hard_decline);
        assert!(Failure::not_chargeable().hard_decline);
        assert_eq!(Failure::not_chargeable().message, ADVICE_TEMPORARY);
        let auth = Failure::authentication_off_session();
        assert_eq!(
            (auth.code, auth.message.as_str(), auth.hard_decline),
            (
                FailureCode::AuthenticationRequired,
                ADVICE_AUTHENTICATION,
                true
            )
        );
    }

    #[test]
    fn intents_of_either_kind() {
        for kind in [TOPUP, RECHARGE] {
            assert_eq!(
                settle_intent(&intent("succeeded", true), kind),
                Settlement::Succeed
            );
            assert_eq!(
                settle_intent(&intent("processing", true), kind),
                Settlement::Wait
            );
            assert_eq!(
                settle_intent(&intent("requires_capture", true), kind),
                Settlement::Wait
            );
            let declined = IntentReport {
                last_error: Some(card("card_declined", None, "Your card was declined.")),
                ..intent("requires_payment_method", true)
            };
            assert_eq!(
                settle_intent(&declined, kind),
                Settlement::Fail(Failure {
                    code: FailureCode::CardDeclined,
                    message: format!("{ADVICE_DECLINED} (Your card was declined.)"),
                    hard_decline: true,
                })
            );
            // Canceled is final: it fails whoever reads it (the copies disagreed here).
            let canceled_after_decline = IntentReport {
                status: IntentStatus::Canceled,
                ..declined
            };
            assert_eq!(
                settle_intent(&canceled_after_decline, kind),
                settle_intent(&declined, kind)
            );
            assert_eq!(
                settle_intent(&intent("canceled", true), kind),
                Settlement::Fail(Failure::of_canceled_intent(None))
            );
        }
    }

    #[test]
    fn intents_waiting_for_the_customer() {
        // A top-up's customer is there: 3-D Secure on a saved card, or Stripe.js for a new one.
        assert_eq!(
            settle_intent(&intent("requires_action", true), TOPUP),
            Settlement::AwaitCustomer {
                authentication: true
            }
        );
        assert_eq!(
            settle_intent(&intent("requires_confirmation", true), TOPUP),
            Settlement::AwaitCustomer {
                authentication: true
            }
        );
        assert_eq!(
            settle_intent(&intent("requires_action", false), TOPUP),
            Settlement::AwaitCustomer {
                authentication: false
            }
        );
        assert_eq!(
            settle_intent(&intent("requires_payment_method", false), TOPUP),
            Settlement::AwaitCustomer {
                authentication: false
            }
        );
        assert_eq!(
            settle_intent(&intent("a_status_from_2030", true), TOPUP),
            Settlement::AwaitCustomer {
                authentication: false
            }
        );
        // A recharge's customer is not: authentication fails hard, the rest soft.
        assert_eq!(
            settle_intent(&intent("requires_action", true), RECHARGE),
            Settlement::Fail(Failure::authentication_off_session())
        );
        assert_eq!(
            settle_intent(&intent("requires_confirmation", true), RECHARGE),
            Settlement::Fail(Failure::authentication_off_session())
        );
        for status in ["requires_payment_method", "a_status_from_2030"] {
            assert_eq!(
                settle_intent(&intent(status, true), RECHARGE),
                Settlement::Fail(Failure::processing(None, false)),
                "{status}"
            );
        }
    }

    #[test]
    fn card_errors() {
        let declined = card("card_declined", None, "Your card was declined.");
        assert!(!card_error_needs_intent(&declined, TOPUP));
        assert_eq!(
            settle_card_error(declined, TOPUP, None),
            Settlement::Fail(Failure::of_card(declined))
        );
        let auth = card(
            "authentication_required",
            Some("authentication_required"),
            "Your card requires authentication.",
        );
        assert!(card_error_needs_intent(&auth, TOPUP));
        assert!(!card_error_needs_intent(&auth, RECHARGE));
        assert_eq!(
            settle_card_error(auth, TOPUP, Some(IntentStatus::RequiresAction)),
            Settlement::AwaitCustomer {
                authentication: true
            }
        );
        // The intent could not be read, or is canceled: nothing left to authenticate.
        let failed = Settlement::Fail(Failure {
            code: FailureCode::AuthenticationRequired,
            message: format!("{ADVICE_AUTHENTICATION} (Your card requires authentication.)"),
            hard_decline: true,
        });
        assert_eq!(settle_card_error(auth, TOPUP, None), failed);
        assert_eq!(
            settle_card_error(auth, TOPUP, Some(IntentStatus::Canceled)),
            failed
        );
        assert_eq!(
            settle_card_error(auth, RECHARGE, Some(IntentStatus::RequiresAction)),
            failed
        );
    }

    #[test]
    fn request_failures() {
        use RequestFailure::{Refused, Unanswered};
        assert_eq!(
            settle_request_failure(Unanswered, TOPUP),
            Settlement::StripeFailed
        );
        assert_eq!(
            settle_request_failure(Unanswered, RECHARGE),
            Settlement::StripeFailed
        );
        assert_eq!(
            settle_request_failure(Refused, TOPUP),
            Settlement::StripeFailed
        );
        assert_eq!(
            settle_request_failure(Refused, RECHARGE),
            Settlement::Fail(Failure {
                code: FailureCode::PaymentProcessingError,
                message: ADVICE_TEMPORARY.to_owned(),
                hard_decline: true,
            })
        );
        assert_eq!(
            settle_unreadable_intent(Unanswered),
            Settlement::StripeFailed
        );
        assert_eq!(settle_unreadable_intent(Refused), Settlement::Wait);
    }

    #[test]
    fn reconciling_payments_never_seen_at_stripe() {
        let created = 1_793_491_200;
        let hour = 3_600;
        // A recharge 22 h 59 min 59 s old is charged again; at 23 h it is too old.
        assert_eq!(
            reconcile_unstarted(RECHARGE, created, created + 23 * hour - 1),
            Unstarted::ChargeAgain
        );
        assert_eq!(
            reconcile_unstarted(RECHARGE, created, created + 23 * hour),
            Unstarted::Fail(Failure::not_started())
        );
        // A top-up is never charged again: its customer left.
        assert_eq!(
            reconcile_unstarted(TOPUP, created, created + 300),
            Unstarted::Fail(Failure::not_started())
        );
        assert_eq!(charge_search_since(created), created - 60);
    }
}
