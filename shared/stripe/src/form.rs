//! Form encoding of Stripe's nested parameters.
//!
//! Stripe takes `application/x-www-form-urlencoded` bodies whose nested objects and lists are
//! spelled with brackets: `metadata[payment_id]=...`, `items[0][plan]=...`. A [`Form`] is an
//! ordered list of such (key, value) pairs; [`key`] builds the bracketed keys.

use crate::error::StripeError;

/// Builds a bracketed key: `key(&["items", "0", "plan"])` is `items[0][plan]`.
pub fn key(parts: &[&str]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            out.push('[');
            out.push_str(part);
            out.push(']');
        }
    }
    out
}

/// An ordered list of form parameters (keys may repeat; order is kept).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key=value`.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.pairs.push((key.into(), value.into()));
        self
    }

    /// Appends `key=value` (builder style).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.add(key, value);
        self
    }

    /// Appends `key=value` when `value` is `Some`.
    pub fn with_opt(self, key: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    /// Appends `parent[child]=value`, e.g. `metadata[workspace_id]=ws_1`.
    pub fn with_nested(self, parent: &str, child: &str, value: impl Into<String>) -> Self {
        self.with(key(&[parent, child]), value)
    }

    /// Appends `metadata[name]=value`.
    pub fn with_metadata(self, name: &str, value: impl Into<String>) -> Self {
        self.with_nested("metadata", name, value)
    }

    /// The pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the form has no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The url-encoded form (`a=1&b%5Bc%5D=2`), for a body or a query string.
    pub fn encode(&self) -> Result<String, StripeError> {
        serde_urlencoded::to_string(&self.pairs)
            .map_err(|e| StripeError::BadInput(format!("cannot encode form: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_keys() {
        assert_eq!(key(&["email"]), "email");
        assert_eq!(key(&["metadata", "payment_id"]), "metadata[payment_id]");
        assert_eq!(key(&["items", "0", "plan"]), "items[0][plan]");
        assert_eq!(key(&["card", "number"]), "card[number]");
    }

    #[test]
    fn encodes_nested_keys_in_order() {
        let form = Form::new()
            .with("customer", "cus_1")
            .with(key(&["items", "0", "plan"]), "pro")
            .with_metadata("workspace_id", "ws_1")
            .with_nested("card", "number", "4242424242424242");
        assert_eq!(
            form.encode().unwrap(),
            "customer=cus_1&items%5B0%5D%5Bplan%5D=pro&metadata%5Bworkspace_id%5D=ws_1\
             &card%5Bnumber%5D=4242424242424242"
        );
        let decoded: Vec<(String, String)> =
            serde_urlencoded::from_str(&form.encode().unwrap()).unwrap();
        assert_eq!(decoded, form.pairs());
    }

    #[test]
    fn escapes_reserved_characters() {
        let form = Form::new()
            .with("email", "a+b@example.com")
            .with("name", "Ana & Bo = \"Co\"")
            .with("return_url", "https://app.example/billing?x=1&y=é");
        let encoded = form.encode().unwrap();
        assert_eq!(
            encoded,
            "email=a%2Bb%40example.com&name=Ana+%26+Bo+%3D+%22Co%22\
             &return_url=https%3A%2F%2Fapp.example%2Fbilling%3Fx%3D1%26y%3D%C3%A9"
        );
        let decoded: Vec<(String, String)> = serde_urlencoded::from_str(&encoded).unwrap();
        assert_eq!(decoded, form.pairs());
    }

    #[test]
    fn optional_and_empty() {
        let form = Form::new()
            .with_opt("payment_method", None::<String>)
            .with_opt("customer", Some("cus_1"));
        assert_eq!(form.encode().unwrap(), "customer=cus_1");
        assert_eq!(form.get("customer"), Some("cus_1"));
        assert!(Form::new().is_empty());
        assert_eq!(Form::new().encode().unwrap(), "");
    }
}
