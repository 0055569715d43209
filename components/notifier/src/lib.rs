//! Notifications to the platform (docs/notifications.md).
//!
//! - the cron trigger (every 5 seconds) and its HTTP twin `POST /internal/jobs/deliver-notifications`
//!   (service key) run one pass: end the grace periods that ran out, check the runway of the next
//!   200 workspaces (`runway.low`), then send due events to
//!   `notifications_url`, signed with `notifications_secret` (Standard Webhooks), a few at a time,
//!   each cut off after `notifications_timeout_ms`. Nothing is sent while the URL is empty;
//! - `GET /v1/notifications` (service key): what was sent and what failed, newest first, with
//!   `workspace_id`, `status`, `type`, `limit` and `cursor`;
//! - `POST /v1/notifications/{id}/redeliver` (service key): send an event again, same id.
//!
//! The ledger is never held while a request is out: a pass claims a few events (one short ledger
//! operation), sends them, then records the outcomes (another).

// Components write their logs with `spin_adapter::log!`: `eprintln!`/`println!` panic when the
// log's disk is full, which traps the instance (spin-adapter's `log!` says more).
#![deny(clippy::print_stderr, clippy::print_stdout)]

use std::time::Duration;

use http::Method;
use ledger::notifications::{self, NotificationFilter, Outcome, OutcomeReport};
use serde::{Deserialize, Serialize};
use spin_adapter::webhooks::{self, Delivery, Signer};
use spin_adapter::{
    ApiError, Job, Reply, for_service, method_not_allowed, not_found, now_secs, parse_query,
    path_segments, run_ledger, run_on_demand, variable,
};
use spin_sdk::http::Request;

/// Events sent at once; also the size of each claim. Each claim and each record of outcomes is
/// one short ledger transaction, whatever its size: larger claims pay fewer of them (on Spin,
/// every statement is a hop to a blocking thread).
const IN_FLIGHT_MAX: usize = 16;

/// The most claims one pass makes (then it reports `more`; the cron comes back in 5 seconds).
const CLAIMS_PER_PASS_MAX: usize = 250;

/// The timeout when `notifications_timeout_ms` is empty, as spin.toml leaves it: written here
/// only (docs/notifications.md states it).
const TIMEOUT_DEFAULT_MS: u64 = 5_000;

/// The longest timeout accepted: a slow endpoint must not hold a pass for long.
const TIMEOUT_MAX_MS: u64 = 30_000;

/// What one pass did (the HTTP answer).
#[derive(Debug, Default, Serialize)]
struct PassReport {
    /// Whether sending is configured (`notifications_url` set).
    sending: bool,
    /// Grace periods that ended by time (each a `grace.ended` event).
    graces_ended: usize,
    /// Workspaces whose runway was newly found short (each a `runway.low` event).
    runways_low: usize,
    /// Events delivered.
    delivered: usize,
    /// Failed attempts that will be retried.
    retrying: usize,
    /// Events given up on after the retry window.
    failed: usize,
    /// Whether due events remain (the pass's budget ran out).
    more: bool,
}

/// Where and how to send.
struct Endpoint {
    url: String,
    signer: Signer,
    timeout: Duration,
}

/// The endpoint from the Spin variables: `None` when `notifications_url` is empty. A URL without
/// a usable secret or timeout is the operator's mistake: a 500 naming the variable.
async fn endpoint() -> Result<Option<Endpoint>, ApiError> {
    let url = variable("notifications_url").await?;
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ApiError::internal(
            "The server is misconfigured: notifications_url is not an http(s) URL.",
        ));
    }
    let signer = Signer::from_secret(&variable("notifications_secret").await?).map_err(|why| {
        ApiError::internal(format!(
            "The server is misconfigured: notifications_secret: {why}."
        ))
    })?;
    let timeout_ms = match variable("notifications_timeout_ms").await?.trim() {
        "" => TIMEOUT_DEFAULT_MS,
        text => text
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=TIMEOUT_MAX_MS).contains(ms))
            .ok_or_else(|| {
                ApiError::internal(
                    "The server is misconfigured: notifications_timeout_ms must be 1..30000.",
                )
            })?,
    };
    Ok(Some(Endpoint {
        url: url.to_owned(),
        signer,
        timeout: Duration::from_millis(timeout_ms),
    }))
}

/// One pass at `now` (seconds since the epoch).
async fn run_pass() -> Result<PassReport, ApiError> {
    let mut report = PassReport {
        graces_ended: run_ledger(async |db| {
            notifications::end_graces(db, now_secs(), notifications::GRACE_BATCH_MAX).await
        })
        .await?,
        runways_low: run_ledger(async |db| {
            let catalog = spin_adapter::catalog(db).await?;
            notifications::check_runways(db, &catalog, now_secs(), notifications::RUNWAY_BATCH_MAX)
                .await
        })
        .await?,
        ..PassReport::default()
    };
    let Some(endpoint) = endpoint().await? else {
        return Ok(report);
    };
    report.sending = true;
    // A claim is held for as long as its sends may take, plus a margin; a pass that dies leaves
    // the events to the next claim after that.
    let lease_secs = i64::try_from(endpoint.timeout.as_secs()).unwrap_or(30) + 5;
    for _ in 0..CLAIMS_PER_PASS_MAX {
        let claimed = run_ledger(async |db| {
            let catalog = spin_adapter::catalog(db).await?;
            notifications::claim_due(db, &catalog, now_secs(), lease_secs, IN_FLIGHT_MAX as i64)
                .await
        })
        .await?;
        if claimed.is_empty() {
            return Ok(report);
        }
        let sends = claimed.iter().map(|outgoing| async {
            let body = serde_json::to_vec(&outgoing.event).unwrap_or_default();
            let delivery = webhooks::send(
                &endpoint.url,
                &endpoint.signer,
                &outgoing.event.id,
                now_secs(),
                body.into(),
                endpoint.timeout,
            )
            .await;
            (
                outgoing.row_id,
                outgoing.attempt,
                outcome_of(delivery, endpoint.timeout),
            )
        });
        let outcomes = futures::future::join_all(sends).await;
        let recorded: OutcomeReport =
            run_ledger(async |db| notifications::record_outcomes(db, &outcomes, now_secs()).await)
                .await?;
        report.delivered += recorded.delivered;
        report.retrying += recorded.retrying;
        report.failed += recorded.failed;
    }
    report.more = true;
    Ok(report)
}

fn outcome_of(delivery: Delivery, timeout: Duration) -> Outcome {
    match delivery {
        Delivery::Answered { status, .. } if (200..300).contains(&status) => {
            Outcome::Delivered { status }
        }
        Delivery::Answered { status, body } => Outcome::Failed {
            status: Some(status),
            error: format!("the endpoint answered {status}: {}", body.trim()),
        },
        Delivery::TimedOut => Outcome::Failed {
            status: None,
            error: format!("no answer within {} ms", timeout.as_millis()),
        },
        Delivery::Failed(why) => Outcome::Failed {
            status: None,
            error: format!("not delivered: {why}"),
        },
    }
}

/// The query of `GET /v1/notifications`; empty values count as absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workspace_id: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

async fn list(uri: &http::Uri) -> Result<Reply, ApiError> {
    let query: ListQuery = parse_query(uri)?;
    let limit = match present(query.limit) {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::malformed("limit must be a whole number 1..100")
                .with_detail("field", "limit".into())
        })?),
    };
    let filter = NotificationFilter {
        workspace_id: present(query.workspace_id),
        status: present(query.status),
        kind: present(query.kind),
        limit,
        cursor: present(query.cursor),
    };
    let page = run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        notifications::list(db, &catalog, &filter).await
    })
    .await?;
    Ok(Reply::json(200, &page))
}

async fn redeliver(id: &str) -> Result<Reply, ApiError> {
    let notification = run_ledger(async |db| {
        let catalog = spin_adapter::catalog(db).await?;
        notifications::redeliver(db, &catalog, id, now_secs()).await
    })
    .await?;
    Ok(Reply::json(200, &notification))
}

/// The job: delivery and the grace and runway sweeps, every 5 seconds and on demand.
struct Deliver;

impl Job for Deliver {
    const SCHEDULE: ledger::jobs::Schedule = ledger::jobs::NOTIFIER;
    type Report = PassReport;

    async fn run_pass() -> Result<PassReport, ApiError> {
        run_pass().await
    }

    fn summary(report: &PassReport) -> Option<String> {
        let worth_a_line = report.delivered
            + report.retrying
            + report.failed
            + report.graces_ended
            + report.runways_low
            > 0
            || report.more;
        worth_a_line.then(|| {
            format!(
                "{} delivered, {} to retry, {} failed, {} graces ended, more: {}",
                report.delivered, report.retrying, report.failed, report.graces_ended, report.more
            )
        })
    }
}

/// The component's HTTP entry point.
#[spin_sdk::http_service]
async fn handle(request: Request) -> Reply {
    let (parts, _body) = request.into_parts();
    let path = parts.uri.path();
    let segments = path_segments(path);
    let outcome = match (segments.as_slice(), &parts.method) {
        (["internal", "jobs", "deliver-notifications"], &Method::POST) => {
            run_on_demand::<Deliver>(&parts.headers).await
        }
        (["internal", "jobs", "deliver-notifications"], method) => {
            Err(method_not_allowed(method, &["POST"]))
        }
        (["v1", "notifications"], &Method::GET) => {
            for_service(&parts.headers, async || list(&parts.uri).await).await
        }
        (["v1", "notifications"], method) => Err(method_not_allowed(method, &["GET"])),
        (["v1", "notifications", id, "redeliver"], &Method::POST) => {
            for_service(&parts.headers, async || redeliver(id).await).await
        }
        (["v1", "notifications", _, "redeliver"], method) => {
            Err(method_not_allowed(method, &["POST"]))
        }
        _ => Err(not_found(path)),
    };
    outcome.unwrap_or_else(ApiError::into_reply)
}

spin_cron::export_cron!(spin_adapter::Cron<Deliver>);
