//! Application and component variables, resolved as Spin resolves them.
//!
//! Application variables come from `SPIN_VARIABLE_<UPPER_NAME>` in the environment, else their
//! `default`; a `required` variable without a value is a start-up error. Component variables
//! (and templated `allowed_outbound_hosts`) are templates over application variables.

use crate::manifest::AppVariable;
use anyhow::{Result, bail};
use std::collections::BTreeMap;

/// Resolved application variable values, by name.
#[derive(Debug, Default, Clone)]
pub struct AppVariables {
    values: BTreeMap<String, String>,
}

impl AppVariables {
    /// Resolves every `[variables]` entry from `env` (a lookup such as `std::env::var`).
    pub fn resolve(
        decls: &BTreeMap<String, AppVariable>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut values = BTreeMap::new();
        for (name, decl) in decls {
            let env_name = format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase());
            let value = match env(&env_name) {
                Some(v) => v,
                None => match &decl.default {
                    Some(d) => d.clone(),
                    None if decl.required => {
                        bail!("required variable `{name}` has no value: set {env_name}")
                    }
                    None => bail!("variable `{name}` has neither a default nor `required = true`"),
                },
            };
            values.insert(name.clone(), value);
        }
        Ok(Self { values })
    }

    /// Expands `{{ name }}` references in `template`.
    pub fn expand(&self, template: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("unterminated template in {template:?}");
            };
            let name = after[..end].trim();
            match self.values.get(name) {
                Some(v) => out.push_str(v),
                None => bail!("template {template:?} refers to undeclared variable `{name}`"),
            }
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            bail!("unbalanced `}}}}` in template {template:?}");
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(default: Option<&str>, required: bool) -> AppVariable {
        AppVariable {
            default: default.map(str::to_owned),
            required,
            secret: false,
            description: None,
        }
    }

    #[test]
    fn env_overrides_default_and_templates_expand() -> Result<()> {
        let mut decls = BTreeMap::new();
        decls.insert("api_base".to_owned(), decl(Some("https://a"), false));
        decls.insert("key".to_owned(), decl(None, true));
        let vars = AppVariables::resolve(&decls, |n| {
            (n == "SPIN_VARIABLE_KEY").then(|| "sk".to_owned())
        })?;
        assert_eq!(
            vars.expand("{{ api_base }}/x?k={{key}}")?,
            "https://a/x?k=sk"
        );
        assert!(vars.expand("{{ nope }}").is_err());
        Ok(())
    }

    #[test]
    fn required_without_value_fails() {
        let mut decls = BTreeMap::new();
        decls.insert("key".to_owned(), decl(None, true));
        assert!(AppVariables::resolve(&decls, |_| None).is_err());
    }
}
