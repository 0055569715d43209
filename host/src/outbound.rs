//! `allowed_outbound_hosts`: which destinations a component may reach, checked on every
//! outgoing `wasi:http` request, with Spin's syntax (`https://api.stripe.com`,
//! `http://127.0.0.1:12111`, `*://*:*`, `https://*.example.com`, `http://localhost:8000..8010`).

use anyhow::{Context as _, Result, bail};

/// One parsed allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    ports: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: any subdomain of the suffix (stored with its leading dot).
    Subdomain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Range(u16, u16),
}

/// The default port for a scheme, as Spin assumes when an entry omits it.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        _ => None,
    }
}

impl AllowedHost {
    /// Parses one (already template-expanded) entry.
    pub fn parse(entry: &str) -> Result<Self> {
        let (scheme, rest) = entry
            .split_once("://")
            .with_context(|| format!("allowed outbound host {entry:?} needs a scheme"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            bail!("allowed outbound host {entry:?} must not contain a path");
        }
        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') => {
                Some(s.to_ascii_lowercase())
            }
            _ => bail!("allowed outbound host {entry:?} has an invalid scheme"),
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || p.parse::<u16>().is_ok() || p == "*" => {
                (h, Some(p))
            }
            _ => (rest, None),
        };
        if host == "self" || host == "self.alt" || host.ends_with(".spin.internal") {
            bail!(
                "allowed outbound host {entry:?}: service chaining is not supported by this host"
            );
        }
        let host = match host {
            "" => bail!("allowed outbound host {entry:?} has no host"),
            "*" => HostPattern::Any,
            h => match h.strip_prefix("*.") {
                Some(suffix) if !suffix.is_empty() => {
                    HostPattern::Subdomain(format!(".{}", suffix.to_ascii_lowercase()))
                }
                Some(_) => bail!("allowed outbound host {entry:?} has an invalid wildcard"),
                None if h.contains('*') => {
                    bail!(
                        "allowed outbound host {entry:?}: `*` only as a whole host or `*.` prefix"
                    )
                }
                None => HostPattern::Exact(h.to_ascii_lowercase()),
            },
        };
        let ports = match port {
            Some("*") => PortPattern::Any,
            // Spin's range syntax `start..end` excludes `end`.
            Some(p) => match p.split_once("..") {
                Some((lo, hi)) => {
                    let lo: u16 = lo
                        .parse()
                        .with_context(|| format!("bad port in {entry:?}"))?;
                    let hi: u16 = hi
                        .parse()
                        .with_context(|| format!("bad port in {entry:?}"))?;
                    if lo >= hi {
                        bail!("empty port range in {entry:?}");
                    }
                    PortPattern::Range(lo, hi - 1)
                }
                None => {
                    let p = p
                        .parse()
                        .with_context(|| format!("bad port in {entry:?}"))?;
                    PortPattern::Range(p, p)
                }
            },
            None => match scheme.as_deref().and_then(default_port) {
                Some(p) => PortPattern::Range(p, p),
                None => bail!("allowed outbound host {entry:?} must give a port for its scheme"),
            },
        };
        Ok(Self {
            scheme,
            host,
            ports,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => *h == host,
            HostPattern::Subdomain(suffix) => host.ends_with(suffix.as_str()),
        };
        let port_ok = match self.ports {
            PortPattern::Any => true,
            PortPattern::Range(lo, hi) => (lo..=hi).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A component's whole allow-list.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed: Vec<AllowedHost>,
}

impl OutboundPolicy {
    /// Builds the policy from expanded entries. As in Spin, an entry that expands to nothing
    /// (`""`, `"http://"`, `"https://"`) is skipped: an optional endpoint left unset.
    pub fn new(entries: &[String]) -> Result<Self> {
        let allowed = entries
            .iter()
            .filter(|e| !matches!(e.as_str(), "" | "http://" | "https://"))
            .map(|e| AllowedHost::parse(e))
            .collect::<Result<_>>()?;
        Ok(Self { allowed })
    }

    /// Whether the URI may be requested. A missing port uses the scheme's default.
    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Some(port) = uri.port_u16().or_else(|| default_port(&scheme)) else {
            return false;
        };
        self.allowed.iter().any(|a| a.allows(&scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entries: &[&str], uri: &str) -> Result<bool> {
        let entries: Vec<String> = entries.iter().map(|s| (*s).to_owned()).collect();
        let policy = OutboundPolicy::new(&entries)?;
        Ok(policy.allows_uri(&uri.parse()?))
    }

    #[test]
    fn spin_syntax() -> Result<()> {
        assert!(allows(
            &["https://api.stripe.com"],
            "https://api.stripe.com/v1/x"
        )?);
        assert!(!allows(
            &["https://api.stripe.com"],
            "http://api.stripe.com/v1/x"
        )?);
        assert!(!allows(
            &["https://api.stripe.com"],
            "https://api.stripe.com:8443/"
        )?);
        assert!(allows(
            &["http://127.0.0.1:12111"],
            "http://127.0.0.1:12111/v1"
        )?);
        assert!(!allows(
            &["http://127.0.0.1:12111"],
            "http://127.0.0.1:12112/v1"
        )?);
        assert!(allows(&["*://*:*"], "http://example.com:9/")?);
        assert!(allows(
            &["https://*.example.com"],
            "https://a.example.com/"
        )?);
        assert!(!allows(&["https://*.example.com"], "https://example.org/")?);
        assert!(allows(
            &["http://localhost:8000..8010"],
            "http://localhost:8005/"
        )?);
        assert!(!allows(
            &["http://localhost:8000..8010"],
            "http://localhost:8010/"
        )?);
        assert!(!allows(&[""], "http://localhost/")?);
        assert!(!allows(&[], "https://api.stripe.com/")?);
        assert!(AllowedHost::parse("api.stripe.com").is_err());
        assert!(AllowedHost::parse("http://self").is_err());
        assert!(AllowedHost::parse("*://*:*").is_ok());
        Ok(())
    }
}
