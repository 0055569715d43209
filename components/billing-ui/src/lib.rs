//! The billing page a voice platform embeds (docs/billing-page.md).
//!
//! Serves static files, compiled into the component, under `/billing/`:
//! - `/billing/` (`index.html`): the page, with the Stripe publishable key and the allowed
//!   embedding origins written into data attributes and Stripe.js's script tag;
//! - `/billing/app.css`: the page's style;
//! - `/billing/app.js` and the ES modules it imports (`/billing/api.js`, `/billing/buy.js`, ...,
//!   the list in [`MODULES`]): the page's code, served as written (no bundler, no build step);
//! - `/billing/embed.js`: the `<voice-billing>` custom element that embedding products load.
//!
//! The page talks only to the public HTTP contract, with the user's token, which the embedding
//! product hands over by `postMessage` (never in a URL). Every answer carries a strict
//! Content-Security-Policy: scripts, styles and requests only from this origin and Stripe's,
//! nothing inline, and only the listed origins may frame the page.
//!
//! Spin variables: `stripe_publishable_key` (empty: the page offers saved cards only),
//! `stripe_js_url` (Stripe.js; tests point it at localstripe's stand-in) and
//! `billing_embed_origins` (space- or comma-separated origins allowed to frame the page).

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]

use http::Method;
use spin_adapter::{ApiError, Reply, method_not_allowed, not_found, variable};
use spin_sdk::http::Request;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_CSS: &str = include_str!("../assets/app.css");
const EMBED_JS: &str = include_str!("../assets/embed.js");

/// `(file name, source)` of each of `assets/<name>`, for [`MODULES`].
macro_rules! modules {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../assets/", $name)))),*]
    };
}

/// The page's ES modules, each served at `/billing/<name>`: `app.js` is the entry point
/// (`<script type="module">` in `index.html`), and imports the others by relative path.
const MODULES: &[(&str, &str)] = modules![
    "app.js",
    "state.js",
    "dom.js",
    "format.js",
    "parent.js",
    "api.js",
    "summary.js",
    "banner.js",
    "balances.js",
    "buy.js",
    "auto-recharge.js",
    "plans.js",
    "agents.js",
    "usage.js",
    "transactions.js",
    "documents.js",
];

/// The source of the module served at `path`, if it is one.
fn module(path: &str) -> Option<&'static str> {
    let name = path.strip_prefix("/billing/")?;
    MODULES
        .iter()
        .find(|(module, _)| *module == name)
        .map(|(_, source)| *source)
}

/// Stripe.js's own origin: with it, the policy also allows the origins Stripe documents for its
/// API calls and 3-D Secure frames.
const STRIPE_JS_ORIGIN: &str = "https://js.stripe.com";
const STRIPE_EXTRA_CONNECT: &str = "https://api.stripe.com";
const STRIPE_EXTRA_FRAME: &str = "https://hooks.stripe.com";

/// What the page is served with, from the Spin variables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PageConfig {
    /// Stripe's publishable key (`pk_...`); empty when card entry is not configured.
    stripe_publishable_key: String,
    /// Stripe.js's URL, when it is a usable http(s) URL.
    stripe_js_url: Option<String>,
    /// Origins allowed to frame the page (besides this one).
    embed_origins: Vec<String>,
}

impl PageConfig {
    /// Reads and checks the variables; a value that is not usable is left out (and logged), so
    /// a mistake closes the page to Stripe or to embedders rather than opening it wider.
    fn from_variables(publishable_key: &str, stripe_js_url: &str, embed_origins: &str) -> Self {
        let stripe_js_url = stripe_js_url.trim();
        let stripe_js_url = match origin_of(stripe_js_url) {
            Some(_) => Some(stripe_js_url.to_owned()),
            None if stripe_js_url.is_empty() => None,
            None => {
                spin_adapter::log!(
                    "billing-ui: stripe_js_url {stripe_js_url:?} is not an http(s) URL"
                );
                None
            }
        };
        let embed_origins = embed_origins
            .split([' ', ',', '\n', '\t'])
            .filter(|s| !s.is_empty())
            .filter(|candidate| {
                let ok = is_origin_source(candidate);
                if !ok {
                    spin_adapter::log!(
                        "billing-ui: billing_embed_origins entry {candidate:?} is not an origin"
                    );
                }
                ok
            })
            .map(str::to_owned)
            .collect();
        let key = publishable_key.trim();
        let stripe_publishable_key = if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            key.to_owned()
        } else {
            spin_adapter::log!("billing-ui: stripe_publishable_key is not a Stripe key");
            String::new()
        };
        Self {
            stripe_publishable_key,
            stripe_js_url,
            embed_origins,
        }
    }

    /// Stripe.js is loaded only when there is a key to use it with.
    fn stripe_js(&self) -> Option<&str> {
        self.stripe_js_url
            .as_deref()
            .filter(|_| !self.stripe_publishable_key.is_empty())
    }

    /// The Content-Security-Policy of the page.
    fn content_security_policy(&self) -> String {
        let mut script = vec!["'self'".to_owned()];
        let mut connect = vec!["'self'".to_owned()];
        let mut frame = Vec::new();
        if let Some(origin) = self.stripe_js().and_then(origin_of) {
            script.push(origin.clone());
            connect.push(origin.clone());
            frame.push(origin.clone());
            if origin == STRIPE_JS_ORIGIN {
                connect.push(STRIPE_EXTRA_CONNECT.to_owned());
                frame.push(STRIPE_EXTRA_FRAME.to_owned());
            }
        }
        if frame.is_empty() {
            frame.push("'none'".to_owned());
        }
        let mut ancestors = vec!["'self'".to_owned()];
        ancestors.extend(self.embed_origins.iter().cloned());
        format!(
            "default-src 'none'; script-src {}; style-src 'self'; img-src 'self' data:; \
             connect-src {}; frame-src {}; frame-ancestors {}; base-uri 'none'; \
             form-action 'none'; object-src 'none'",
            script.join(" "),
            connect.join(" "),
            frame.join(" "),
            ancestors.join(" ")
        )
    }

    /// The page with this configuration written in (every value HTML-escaped).
    fn index_html(&self) -> String {
        let stripe_script = self
            .stripe_js()
            .map(|url| format!("<script src=\"{}\"></script>", escape_html(url)))
            .unwrap_or_default();
        INDEX_HTML
            .replace("{{STRIPE_SCRIPT}}", &stripe_script)
            .replace("{{STRIPE_KEY}}", &escape_html(&self.stripe_publishable_key))
            .replace(
                "{{EMBED_ORIGINS}}",
                &escape_html(&self.embed_origins.join(" ")),
            )
    }
}

/// `scheme://host[:port]` of an http(s) URL, lower-cased; `None` for anything else.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_ok = !authority.is_empty()
        && !authority.contains('@')
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    host_ok.then(|| format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// Whether `candidate` is an origin a CSP may name: `scheme://host[:port]`, nothing after it,
/// optionally with a `*.` wildcard for subdomains.
fn is_origin_source(candidate: &str) -> bool {
    let plain = candidate.replacen("://*.", "://", 1);
    origin_of(&plain).is_some_and(|origin| origin == plain.to_ascii_lowercase())
}

/// Escapes text for an HTML attribute or text node.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Headers every answer of this component carries.
fn hardened(reply: Reply) -> Reply {
    reply
        .with_header("x-content-type-options", "nosniff".into())
        .with_header("referrer-policy", "no-referrer".into())
        .with_header("cache-control", "no-cache".into())
}

async fn config() -> Result<PageConfig, ApiError> {
    Ok(PageConfig::from_variables(
        &variable("stripe_publishable_key").await?,
        &variable("stripe_js_url").await?,
        &variable("billing_embed_origins").await?,
    ))
}

async fn serve(method: &Method, path: &str) -> Result<Reply, ApiError> {
    if *method != Method::GET && *method != Method::HEAD {
        return Err(method_not_allowed(method, &["GET", "HEAD"]));
    }
    let reply = match path {
        // Relative asset paths resolve against `/billing/`, so the bare path redirects there.
        "/billing" => Reply::empty(308).with_header("location", "/billing/".into()),
        "/billing/" | "/billing/index.html" => {
            let config = config().await?;
            Reply::bytes(
                200,
                "text/html; charset=utf-8",
                config.index_html().into_bytes(),
            )
            .with_header("content-security-policy", config.content_security_policy())
        }
        "/billing/app.css" => {
            Reply::bytes(200, "text/css; charset=utf-8", APP_CSS.as_bytes().to_vec())
        }
        // Loaded by the embedding product's pages, from their origin.
        "/billing/embed.js" => Reply::bytes(
            200,
            "text/javascript; charset=utf-8",
            EMBED_JS.as_bytes().to_vec(),
        )
        .with_header("cross-origin-resource-policy", "cross-origin".into()),
        // A module script must come with a JavaScript MIME type (browsers refuse any other).
        _ => match module(path) {
            Some(source) => Reply::bytes(
                200,
                "text/javascript; charset=utf-8",
                source.as_bytes().to_vec(),
            ),
            None => return Err(not_found(path)),
        },
    };
    Ok(reply)
}

#[spin_sdk::http_service]
async fn handle(request: Request) -> Reply {
    let (parts, _body) = request.into_parts();
    let reply = match serve(&parts.method, parts.uri.path()).await {
        Ok(reply) => reply,
        Err(error) => error.into_reply(),
    };
    // HEAD is answered as GET: the runtime sends the headers without the body.
    hardened(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relative paths `source` imports from (`import ... from "./x.js";`).
    fn imports_of(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter(|line| line.starts_with("import "))
            .filter_map(|line| line.split(" from \"./").nth(1))
            .filter_map(|rest| rest.strip_suffix("\";"))
            .collect()
    }

    #[test]
    fn every_module_imported_is_served_and_every_module_served_is_used() {
        assert_eq!(MODULES[0].0, "app.js", "the entry point index.html loads");
        assert!(INDEX_HTML.contains("<script type=\"module\" src=\"app.js\"></script>"));
        let mut imported = vec!["app.js"];
        for (name, source) in MODULES {
            assert_eq!(module(&format!("/billing/{name}")), Some(*source));
            let imports = imports_of(source);
            let import_lines = source.lines().filter(|l| l.starts_with("import ")).count();
            assert_eq!(
                imports.len(),
                import_lines,
                "{name}: an import not of ./<module>.js"
            );
            for import in imports {
                assert!(
                    MODULES.iter().any(|(served, _)| *served == import),
                    "{name} imports {import}, which is not served"
                );
                imported.push(import);
            }
        }
        for (name, _) in MODULES {
            assert!(
                imported.contains(name),
                "{name} is served but never imported"
            );
        }
        for path in [
            "/billing/",
            "/billing/index.html",
            "/billing/app.css",
            "/billing/embed.js",
            "/billing/secrets.json",
            "/billing/../app.js",
            "/billing//app.js",
            "/billing/assets/app.js",
            "/app.js",
        ] {
            assert_eq!(module(path), None, "{path}");
        }
    }

    #[test]
    fn origins_are_parsed_strictly() {
        assert_eq!(
            origin_of("https://js.stripe.com/v3/").as_deref(),
            Some("https://js.stripe.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8420/js.stripe.com/v3/").as_deref(),
            Some("http://127.0.0.1:8420")
        );
        assert_eq!(origin_of("javascript:alert(1)"), None);
        assert_eq!(origin_of("https://user@evil.example/"), None);
        assert_eq!(origin_of("https://a.example\"><script>/"), None);
        assert!(is_origin_source("https://app.example.com"));
        assert!(is_origin_source("https://*.example.com"));
        assert!(is_origin_source("http://localhost:5173"));
        assert!(!is_origin_source("https://app.example.com/billing"));
        assert!(!is_origin_source("*"));
        assert!(!is_origin_source("'unsafe-inline'"));
    }

    #[test]
    fn policy_names_only_this_origin_stripe_and_the_embedders() {
        let config = PageConfig::from_variables(
            "pk_test_123",
            "https://js.stripe.com/v3/",
            "https://app.example.com, https://*.example.org bogus",
        );
        assert_eq!(
            config.embed_origins,
            ["https://app.example.com", "https://*.example.org"]
        );
        assert_eq!(
            config.content_security_policy(),
            "default-src 'none'; script-src 'self' https://js.stripe.com; style-src 'self'; \
             img-src 'self' data:; connect-src 'self' https://js.stripe.com https://api.stripe.com; \
             frame-src https://js.stripe.com https://hooks.stripe.com; \
             frame-ancestors 'self' https://app.example.com https://*.example.org; \
             base-uri 'none'; form-action 'none'; object-src 'none'"
        );
    }

    #[test]
    fn without_a_key_stripe_is_neither_loaded_nor_allowed() {
        let config = PageConfig::from_variables("", "https://js.stripe.com/v3/", "");
        let policy = config.content_security_policy();
        assert!(!policy.contains("stripe"), "{policy}");
        assert!(policy.contains("frame-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'self';"), "{policy}");
        let html = config.index_html();
        assert!(!html.contains("js.stripe.com"));
        assert!(html.contains("data-stripe-key=\"\""));
    }

    #[test]
    fn values_written_into_the_page_are_escaped() {
        let config = PageConfig::from_variables(
            "pk_test_\"><script>",
            "http://127.0.0.1:8420/js.stripe.com/v3/?a=1&b=\"2\"",
            "",
        );
        // A key that is not a key is dropped, so nothing loads Stripe.js.
        assert_eq!(config.stripe_publishable_key, "");
        let config = PageConfig::from_variables(
            "pk_test_ok",
            "http://127.0.0.1:8420/js.stripe.com/v3/?a=1&b=\"2\"",
            "",
        );
        let html = config.index_html();
        assert!(
            html.contains(
                "<script src=\"http://127.0.0.1:8420/js.stripe.com/v3/?a=1&amp;b=&quot;2&quot;\"></script>"
            ),
            "{html}"
        );
        assert!(!html.contains("{{"), "a placeholder was left");
    }
}
