//! Reading a Spin manifest (`spin.toml`, `spin_manifest_version = 2`) as Spin reads it.
//!
//! Every table uses `deny_unknown_fields`: a field this host does not implement is a start-up
//! error, never silently ignored. Fields that only matter to other Spin commands (`build`,
//! `description`, ...) are accepted and ignored on purpose.

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The parsed manifest, with paths resolved against the manifest's directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be 2.
    pub spin_manifest_version: u32,
    /// The `[application]` table.
    pub application: Application,
    /// The `[variables]` table: application variables.
    #[serde(default)]
    pub variables: BTreeMap<String, AppVariable>,
    /// The `[[trigger.*]]` arrays.
    #[serde(default)]
    pub trigger: Triggers,
    /// The `[component.NAME]` tables.
    #[serde(default)]
    pub component: BTreeMap<String, ComponentDef>,
}

/// The `[application]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "fields Spin accepts but this host does not use")]
pub struct Application {
    /// Application name.
    pub name: String,
    /// Application version (informational).
    #[serde(default)]
    pub version: Option<String>,
    /// Authors (informational).
    #[serde(default)]
    pub authors: Vec<String>,
    /// Description (informational).
    #[serde(default)]
    pub description: Option<String>,
    /// `[application.trigger.http]` settings.
    #[serde(default)]
    pub trigger: Option<ApplicationTriggers>,
}

/// `[application.trigger]`: per-trigger-type application settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationTriggers {
    /// `[application.trigger.http]`.
    #[serde(default)]
    pub http: Option<ApplicationHttp>,
}

/// `[application.trigger.http]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationHttp {
    /// Base path; only "/" is supported (as in Spin 2+, where it is deprecated).
    #[serde(default)]
    pub base: Option<String>,
}

/// One entry of `[variables]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "fields Spin accepts but this host does not use")]
pub struct AppVariable {
    /// Default value used when no provider supplies one.
    #[serde(default)]
    pub default: Option<String>,
    /// Whether a value must be supplied (then `default` must be absent).
    #[serde(default)]
    pub required: bool,
    /// Whether the value is secret (never printed).
    #[serde(default)]
    pub secret: bool,
    /// Description (informational).
    #[serde(default)]
    pub description: Option<String>,
}

/// The `[[trigger.*]]` arrays this host supports.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    /// `[[trigger.http]]`.
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
    /// `[[trigger.cron]]` (the spin-trigger-plugins cron trigger).
    #[serde(default)]
    pub cron: Vec<CronTrigger>,
}

/// One `[[trigger.http]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "fields Spin accepts but this host does not use")]
pub struct HttpTrigger {
    /// Optional trigger id.
    #[serde(default)]
    pub id: Option<String>,
    /// The route: a path, `/prefix/...`, or `{ private = true }`.
    pub route: Route,
    /// The component's name (inline component tables are not supported).
    pub component: String,
    /// `executor = { type = "spin" }` is accepted; anything else is refused.
    #[serde(default)]
    pub executor: Option<toml::Table>,
}

/// A `route` value.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Route {
    /// A path pattern.
    Path(String),
    /// `{ private = true }`: reachable only through service chaining.
    Private(PrivateRoute),
}

/// `route = { private = true }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateRoute {
    /// Must be true.
    pub private: bool,
}

/// One `[[trigger.cron]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "fields Spin accepts but this host does not use")]
pub struct CronTrigger {
    /// Optional trigger id.
    #[serde(default)]
    pub id: Option<String>,
    /// The component's name.
    pub component: String,
    /// Six or seven fields, seconds first, optional year last.
    pub cron_expression: String,
}

/// One `[component.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "fields Spin accepts but this host does not use")]
pub struct ComponentDef {
    /// Path to the .wasm file, relative to the manifest's directory.
    pub source: ComponentSource,
    /// Description (informational).
    #[serde(default)]
    pub description: Option<String>,
    /// Key-value store labels the component may open.
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    /// SQLite database labels the component may open.
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    /// Outbound network destinations (`scheme://host:port`, templates allowed).
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variables (values are templates over application variables).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Environment variables visible to the guest.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Files to mount: not supported by this host (must be empty).
    #[serde(default)]
    pub files: Vec<toml::Value>,
    /// Excluded files: only meaningful with `files`.
    #[serde(default)]
    pub exclude_files: Vec<String>,
    /// `[component.NAME.build]`: for `spin build`, ignored here.
    #[serde(default)]
    pub build: Option<toml::Table>,
}

/// A component `source`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[allow(dead_code, reason = "fields Spin accepts but this host does not use")]
pub enum ComponentSource {
    /// A local path.
    Path(String),
    /// A remote source (`{ url, digest }`): not supported by this host.
    Remote(toml::Table),
}

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    let manifest: Manifest = toml::from_str(&text)
        .with_context(|| format!("invalid or unsupported manifest {}", path.display()))?;
    manifest.validate()?;
    Ok(manifest)
}

impl Manifest {
    fn validate(&self) -> Result<()> {
        if self.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version {} is not supported (only 2)",
                self.spin_manifest_version
            );
        }
        if let Some(base) = self
            .application
            .trigger
            .as_ref()
            .and_then(|t| t.http.as_ref())
            .and_then(|h| h.base.as_deref())
            && base != "/"
        {
            bail!("[application.trigger.http] base = {base:?} is not supported (only \"/\")");
        }
        for (name, var) in &self.variables {
            check_variable_name(name)?;
            if var.required && var.default.is_some() {
                bail!("variable `{name}`: `required` and `default` are mutually exclusive");
            }
        }
        for (name, comp) in &self.component {
            if let ComponentSource::Remote(_) = comp.source {
                bail!("component `{name}`: only local file sources are supported");
            }
            if !comp.files.is_empty() || !comp.exclude_files.is_empty() {
                bail!("component `{name}`: `files` is not supported by this host");
            }
            for var in comp.variables.keys() {
                check_variable_name(var)
                    .with_context(|| format!("component `{name}` variables"))?;
            }
        }
        for trigger in &self.trigger.http {
            if !self.component.contains_key(&trigger.component) {
                bail!(
                    "[[trigger.http]] refers to unknown component `{}`",
                    trigger.component
                );
            }
            if let Some(exec) = &trigger.executor {
                let kind = exec.get("type").and_then(|t| t.as_str());
                if kind != Some("spin") {
                    bail!(
                        "[[trigger.http]] for `{}`: executor {exec} is not supported",
                        trigger.component
                    );
                }
            }
            if let Route::Private(p) = &trigger.route
                && !p.private
            {
                bail!(
                    "[[trigger.http]] for `{}`: route = {{ private = false }} is invalid",
                    trigger.component
                );
            }
        }
        for trigger in &self.trigger.cron {
            if !self.component.contains_key(&trigger.component) {
                bail!(
                    "[[trigger.cron]] refers to unknown component `{}`",
                    trigger.component
                );
            }
        }
        Ok(())
    }
}

/// Resolves a component's `source` against the manifest directory.
pub fn source_path(manifest_dir: &Path, comp: &ComponentDef) -> Result<PathBuf> {
    match &comp.source {
        ComponentSource::Path(p) => Ok(manifest_dir.join(p)),
        ComponentSource::Remote(_) => bail!("only local file sources are supported"),
    }
}

/// Spin variable names: lower-case ASCII letters, digits and underscores, starting with a letter.
pub fn check_variable_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !(first_ok && rest_ok) {
        bail!("invalid variable name {name:?}: use lower-case letters, digits and underscores");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_refused() {
        let text = r#"
spin_manifest_version = 2
[application]
name = "x"
[component.a]
source = "a.wasm"
frobnicate = true
"#;
        assert!(toml::from_str::<Manifest>(text).is_err());
    }

    #[test]
    fn full_manifest_parses() -> Result<()> {
        let text = r#"
spin_manifest_version = 2
[application]
name = "x"
version = "0.1.0"
[variables]
api_base = { default = "https://api.stripe.com" }
secret_key = { required = true, secret = true }
[[trigger.http]]
route = "/v1/..."
component = "a"
[[trigger.http]]
route = { private = true }
component = "a"
[[trigger.cron]]
component = "a"
cron_expression = "0 * * * * *"
[component.a]
source = "a.wasm"
sqlite_databases = ["default"]
key_value_stores = ["default"]
allowed_outbound_hosts = ["{{ api_base }}"]
[component.a.variables]
base = "{{ api_base }}"
[component.a.build]
command = "cargo build"
"#;
        let m: Manifest = toml::from_str(text)?;
        m.validate()?;
        assert_eq!(m.trigger.http.len(), 2);
        Ok(())
    }
}
