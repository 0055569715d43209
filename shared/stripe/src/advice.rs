//! What we tell the customer about a failed card payment: the seeds' advice ("Error processing
//! payment") for each product failure code of R9.

/// Declined by the bank.
pub const ADVICE_DECLINED: &str = "Card declined: Your bank has declined the transaction. Check that the card has sufficient funds and isn't blocked for online purchases.";
/// The card expired.
pub const ADVICE_EXPIRED: &str =
    "Card expired: Update your payment method in Billing > Payment method.";
/// Authentication (3-D Secure) the customer must complete.
pub const ADVICE_AUTHENTICATION: &str = "The card requires authentication: complete the payment with your bank, or update your payment method.";
/// Everything that is not the card's fault.
pub const ADVICE_TEMPORARY: &str = "Temporary error: Wait a few minutes and try again.";

/// The sentence shown with a product failure code (`card_declined`, `expired_card`,
/// `authentication_required`, `payment_processing_error`).
pub fn advice(product_code: &str) -> &'static str {
    match product_code {
        "card_declined" => ADVICE_DECLINED,
        "expired_card" => ADVICE_EXPIRED,
        "authentication_required" => ADVICE_AUTHENTICATION,
        _ => ADVICE_TEMPORARY,
    }
}

/// The failure message stored with a payment: the advice, then Stripe's own words in brackets.
pub fn failure_message(product_code: &str, stripe_message: Option<&str>) -> String {
    match stripe_message.map(str::trim) {
        Some(stripe) if !stripe.is_empty() => format!("{} ({stripe})", advice(product_code)),
        _ => advice(product_code).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_and_message() {
        assert!(advice("card_declined").starts_with("Card declined"));
        assert_eq!(advice("anything else"), ADVICE_TEMPORARY);
        assert_eq!(
            failure_message("expired_card", Some("Your card has expired.")),
            format!("{ADVICE_EXPIRED} (Your card has expired.)")
        );
        assert_eq!(failure_message("expired_card", Some(" ")), ADVICE_EXPIRED);
    }
}
