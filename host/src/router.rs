//! HTTP trigger routing as Spin does it: exact routes, `:name` segments and trailing `/...`
//! wildcards; the most specific matching route wins.

use anyhow::{Result, bail};

/// One route segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed route pattern bound to a component.
#[derive(Debug, Clone)]
pub struct RoutePattern {
    /// The route as written in the manifest, e.g. `/v1/...`.
    pub raw: String,
    /// The component serving it.
    pub component: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

/// The outcome of routing one request path.
#[derive(Debug, Clone)]
pub struct RouteMatch<'a> {
    /// The matched route.
    pub route: &'a RoutePattern,
    /// The part of the path after the route's fixed prefix (Spin's `spin-path-info`).
    pub path_info: String,
    /// `:name` captures, in route order.
    pub params: Vec<(String, String)>,
}

impl RoutePattern {
    /// Parses a manifest route.
    pub fn parse(raw: &str, component: &str) -> Result<Self> {
        if !raw.starts_with('/') {
            bail!("route {raw:?} must start with '/'");
        }
        let trimmed = raw.trim_end_matches('/');
        let (body, wildcard) = match trimmed
            .strip_suffix("/...")
            .or_else(|| trimmed.strip_suffix("/*"))
        {
            Some(prefix) => (prefix, true),
            None => (trimmed, false),
        };
        let mut segments = Vec::new();
        for seg in body.split('/').filter(|s| !s.is_empty()) {
            if seg == "..." || seg.contains("...") {
                bail!("route {raw:?}: `...` is only allowed as the last segment");
            }
            match seg.strip_prefix(':') {
                Some("") => bail!("route {raw:?}: empty parameter name"),
                Some(name) => segments.push(Segment::Param(name.to_owned())),
                None => segments.push(Segment::Literal(seg.to_owned())),
            }
        }
        Ok(Self {
            raw: raw.to_owned(),
            component: component.to_owned(),
            segments,
            wildcard,
        })
    }

    /// The route without its wildcard suffix (Spin's `spin-component-route`).
    pub fn component_route(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(s) => out.push_str(s),
                Segment::Param(p) => {
                    out.push(':');
                    out.push_str(p);
                }
            }
        }
        out
    }

    /// Ordering key: larger is more specific.
    fn specificity(&self) -> (usize, bool, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (self.segments.len(), !self.wildcard, literals)
    }

    fn matches(&self, path_segments: &[&str]) -> Option<(String, Vec<(String, String)>)> {
        if path_segments.len() < self.segments.len()
            || (!self.wildcard && path_segments.len() != self.segments.len())
        {
            return None;
        }
        let mut params = Vec::new();
        for (pat, seg) in self.segments.iter().zip(path_segments) {
            match pat {
                Segment::Literal(l) if l == seg => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), (*seg).to_owned())),
            }
        }
        let rest = &path_segments[self.segments.len()..];
        let path_info = if rest.is_empty() {
            String::new()
        } else {
            format!("/{}", rest.join("/"))
        };
        Some((path_info, params))
    }
}

/// The routing table of one application.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<RoutePattern>,
}

impl Router {
    /// Builds a router. As in Spin, when two triggers use the same route the later one wins
    /// (with a warning on stderr).
    pub fn new(routes: Vec<RoutePattern>) -> Result<Self> {
        let mut kept: Vec<RoutePattern> = Vec::with_capacity(routes.len());
        for route in routes {
            if let Some(old) = kept
                .iter_mut()
                .find(|r| r.segments == route.segments && r.wildcard == route.wildcard)
            {
                eprintln!(
                    "warning: duplicate route {:?}: component `{}` replaces `{}`",
                    route.raw, route.component, old.component
                );
                *old = route;
            } else {
                kept.push(route);
            }
        }
        kept.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        Ok(Self { routes: kept })
    }

    /// All routes, most specific first.
    pub fn routes(&self) -> &[RoutePattern] {
        &self.routes
    }

    /// Finds the most specific route for a request path (without query).
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.routes.iter().find_map(|route| {
            route
                .matches(&segments)
                .map(|(path_info, params)| RouteMatch {
                    route,
                    path_info,
                    params,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Result<Router> {
        Router::new(vec![
            RoutePattern::parse("/...", "root")?,
            RoutePattern::parse("/v1/...", "v1")?,
            RoutePattern::parse("/v1/plans", "plans")?,
            RoutePattern::parse("/v1/workspaces/:ws/billing", "billing")?,
        ])
    }

    #[test]
    fn most_specific_wins() -> Result<()> {
        let r = router()?;
        let m = r.route("/v1/plans").map(|m| m.route.component.clone());
        assert_eq!(m.as_deref(), Some("plans"));
        let m = r
            .route("/v1/rates/x")
            .map(|m| (m.route.component.clone(), m.path_info));
        assert_eq!(m, Some(("v1".to_owned(), "/rates/x".to_owned())));
        let m = r
            .route("/v1")
            .map(|m| (m.route.component.clone(), m.path_info));
        assert_eq!(m, Some(("v1".to_owned(), String::new())));
        let m = r.route("/other").map(|m| m.route.component.clone());
        assert_eq!(m.as_deref(), Some("root"));
        let m = r.route("/v1/workspaces/w1/billing");
        assert_eq!(
            m.map(|m| m.params),
            Some(vec![("ws".to_owned(), "w1".to_owned())])
        );
        Ok(())
    }

    #[test]
    fn later_duplicate_wins() -> Result<()> {
        let r = Router::new(vec![
            RoutePattern::parse("/a", "x")?,
            RoutePattern::parse("/a/", "y")?,
        ])?;
        let m = r.route("/a").map(|m| m.route.component.clone());
        assert_eq!(m.as_deref(), Some("y"));
        Ok(())
    }
}
