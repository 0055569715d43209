//! `Idempotency-Key` replay for writes, over the Spin key-value store `default`.
//!
//! The record is a response cache, not a money guard: every money movement is idempotent in
//! SQLite by its own id (usage event ids, call ids, payment ids, Stripe idempotency keys), so an
//! empty or lost key-value store can at worst re-execute a request whose ledger effect is then
//! a no-op. What this adds is the contract's replay: the same key and body return the first
//! response (status and body); the same key with another body is a 409 `idempotency_conflict`.
//!
//! Concurrent duplicates: before running the handler a request writes an "in progress" record
//! carrying a random owner token, reads it back, and runs only if it still owns it. A duplicate
//! that finds the record in progress waits for it (up to [`IN_PROGRESS_WAIT`]) and replays the
//! response once it is done. If it is still in progress after that, its request may have died
//! with its host (SIGKILL, crash, trap) and nothing would ever finish it: the duplicate takes
//! over and runs the handler itself, which is safe because the ledger's own idempotency makes
//! a second run a no-op. (Before, such a marker refused every retry with 409 for two minutes
//! after a crash.) Spin's key-value interface has no compare-and-swap, so two duplicates racing
//! within one get/set/get window can still both run, equally harmlessly; the loser of the
//! read-back gets a 409 (`"reason": "in_progress"`) and may retry. A marker older than
//! [`IN_PROGRESS_TIMEOUT_SECS`] is ignored at once.
//! Responses of 5xx are not cached (the marker is deleted), so a retry runs again.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use ledger::sha256_hex;
use serde::{Deserialize, Serialize};
use spin_sdk::key_value::Store;

use crate::config::now_secs;
use crate::error::ApiError;
use crate::http::Reply;

/// The request header carrying the client's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The key-value store label (`key_value_stores = ["default"]`).
const STORE_LABEL: &str = "default";
/// Keys longer than this are refused (Stripe's limit).
const KEY_LENGTH_MAX: usize = 255;
/// How long a completed response is replayed: a day.
const RECORD_TTL_SECS: i64 = ledger::calendar::SECS_PER_DAY;
/// How old an "in progress" marker may be before it is ignored outright.
const IN_PROGRESS_TIMEOUT_SECS: i64 = 120;
/// How long a duplicate waits for an in-progress request with its key before taking over.
const IN_PROGRESS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a waiting duplicate looks at the record again.
const IN_PROGRESS_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Who and what an idempotency key is scoped to: the same key on another route or for another
/// workspace is a different record.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyScope<'a> {
    /// The route pattern, e.g. `"POST /v1/workspaces/{ws}/topups"`.
    pub route: &'a str,
    /// The workspace id (frontend) or the calling service (service key).
    pub principal: &'a str,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum State {
    InProgress,
    Done,
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    state: State,
    /// SHA-256 (hex) of the request path and body.
    request_sha256: String,
    /// Random token of the request that wrote the marker.
    owner: String,
    created_at: i64,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body_base64: String,
}

impl Record {
    fn is_live(&self, now: i64) -> bool {
        let ttl = match self.state {
            State::InProgress => IN_PROGRESS_TIMEOUT_SECS,
            State::Done => RECORD_TTL_SECS,
        };
        now < self.created_at.saturating_add(ttl)
    }
}

/// Runs `run` at most once per idempotency key: without an `Idempotency-Key` header it simply
/// runs; with one it replays a completed response for the same path and body, refuses a
/// different body with 409 `idempotency_conflict`, and otherwise runs and records the response.
///
/// `path` and `body` are what the key promises not to change. The key-value store failing
/// refuses the request with 503 rather than risk running it twice.
pub async fn idempotent(
    headers: &HeaderMap,
    scope: IdempotencyScope<'_>,
    path: &str,
    body: &[u8],
    run: impl AsyncFnOnce() -> Reply,
) -> Reply {
    let key = match idempotency_key(headers) {
        Ok(Some(key)) => key,
        Ok(None) => return run().await,
        Err(error) => return error.into_reply(),
    };
    let record_key = record_key(scope, key);
    let request_sha256 = sha256_hex(&[path.as_bytes(), body]);
    let store = match Store::open(STORE_LABEL).await {
        Ok(store) => store,
        Err(error) => return kv_failure("open", &error),
    };
    match settled(&store, &record_key, &request_sha256).await {
        Err(reply) | Ok(Some(reply)) => return reply,
        Ok(None) => {}
    }
    let now = now_secs();
    let owner = format!(
        "{:016x}",
        spin_sdk::wasip3::random::random::get_random_u64()
    );
    let marker = Record {
        state: State::InProgress,
        request_sha256: request_sha256.clone(),
        owner: owner.clone(),
        created_at: now,
        status: 0,
        content_type: None,
        body_base64: String::new(),
    };
    if let Err(reply) = write(&store, &record_key, &marker).await {
        return reply;
    }
    match read(&store, &record_key).await {
        Err(reply) => return reply,
        Ok(Some(record)) if record.owner != owner => {
            return answer_existing(&record, &request_sha256);
        }
        Ok(_) => {}
    }

    let reply = run().await;

    if reply.status >= 500 {
        if let Err(error) = store.delete(&record_key).await {
            crate::log!("spin-adapter: idempotency marker not deleted: {error:?}");
        }
        return reply;
    }
    let done = Record {
        state: State::Done,
        request_sha256,
        owner,
        created_at: now,
        status: reply.status,
        content_type: reply.content_type.clone(),
        body_base64: STANDARD.encode(&reply.body),
    };
    // The work is done: failing to cache its response must not turn it into an error.
    let _ = write(&store, &record_key, &done).await;
    reply
}

/// What an existing record answers for this request: `Some` reply (a completed response to
/// replay, or a conflict), or `None` when the request should run: no live record, or one still
/// in progress after [`IN_PROGRESS_WAIT`] (see the module docs: its owner may be dead).
async fn settled(
    store: &Store,
    record_key: &str,
    request_sha256: &str,
) -> Result<Option<Reply>, Reply> {
    let started = std::time::Instant::now();
    loop {
        let record = match read(store, record_key).await? {
            Some(record) if record.is_live(now_secs()) => record,
            _ => return Ok(None),
        };
        if record.state == State::Done || record.request_sha256 != request_sha256 {
            return Ok(Some(answer_existing(&record, request_sha256)));
        }
        if started.elapsed() >= IN_PROGRESS_WAIT {
            crate::log!(
                "spin-adapter: taking over an idempotency key in progress for {IN_PROGRESS_WAIT:?}"
            );
            return Ok(None);
        }
        spin_sdk::time::sleep(IN_PROGRESS_POLL).await;
    }
}

/// The request's `Idempotency-Key`: `None` without one, 400 if it is not 1 to 255 visible
/// ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::malformed(format!(
            "Idempotency-Key must be 1 to {KEY_LENGTH_MAX} visible ASCII characters."
        ))
    };
    let key = value.to_str().map_err(|_| invalid())?.trim();
    if key.is_empty() || key.len() > KEY_LENGTH_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(key))
}

fn record_key(scope: IdempotencyScope<'_>, key: &str) -> String {
    let digest = sha256_hex(&[
        scope.route.as_bytes(),
        scope.principal.as_bytes(),
        key.as_bytes(),
    ]);
    format!("idempotency/{digest}")
}

fn answer_existing(record: &Record, request_sha256: &str) -> Reply {
    if record.request_sha256 != request_sha256 {
        return ApiError::new(
            409,
            "idempotency_conflict",
            "This Idempotency-Key was already used for a different request.",
        )
        .into_reply();
    }
    if record.state == State::InProgress {
        return ApiError::new(
            409,
            "idempotency_conflict",
            "A request with this Idempotency-Key is still in progress; retry shortly.",
        )
        .with_detail("reason", "in_progress".into())
        .with_header("retry-after", "1".to_owned())
        .into_reply();
    }
    let Ok(body) = STANDARD.decode(&record.body_base64) else {
        return ApiError::unavailable().into_reply();
    };
    Reply {
        status: record.status,
        content_type: record.content_type.clone(),
        headers: vec![("idempotent-replayed", "true".to_owned())],
        body,
    }
}

async fn read(store: &Store, key: &str) -> Result<Option<Record>, Reply> {
    match store.get(key).await {
        // An unreadable record (older format, corruption) is treated as absent.
        Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).ok()),
        Ok(None) => Ok(None),
        Err(error) => Err(kv_failure("get", &error)),
    }
}

async fn write(store: &Store, key: &str, record: &Record) -> Result<(), Reply> {
    let bytes = serde_json::to_vec(record).map_err(|_| ApiError::unavailable().into_reply())?;
    store
        .set(key, bytes)
        .await
        .map_err(|error| kv_failure("set", &error))
}

fn kv_failure(operation: &str, error: &spin_sdk::key_value::Error) -> Reply {
    crate::log!("spin-adapter: key-value {operation} failed: {error:?}");
    ApiError::unavailable().into_reply()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_validation() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).expect("absent"), None);
        headers.insert(IDEMPOTENCY_HEADER, "abc-123".parse().expect("header"));
        assert_eq!(idempotency_key(&headers).expect("valid"), Some("abc-123"));
        headers.insert(IDEMPOTENCY_HEADER, "a b".parse().expect("header"));
        assert_eq!(idempotency_key(&headers).expect_err("space").status, 400);
        headers.insert(IDEMPOTENCY_HEADER, "x".repeat(256).parse().expect("header"));
        assert!(idempotency_key(&headers).is_err());
    }

    #[test]
    fn records_are_scoped() {
        let a = IdempotencyScope {
            route: "POST /v1/usage",
            principal: "service",
        };
        let b = IdempotencyScope {
            route: "POST /v1/calls",
            principal: "service",
        };
        assert_ne!(record_key(a, "k"), record_key(b, "k"));
        assert_eq!(record_key(a, "k"), record_key(a, "k"));
    }

    #[test]
    fn conflict_and_replay() {
        let record = Record {
            state: State::Done,
            request_sha256: "aa".into(),
            owner: "o".into(),
            created_at: 0,
            status: 201,
            content_type: Some("application/json".into()),
            body_base64: STANDARD.encode(b"{}"),
        };
        assert_eq!(answer_existing(&record, "bb").status, 409);
        let replay = answer_existing(&record, "aa");
        assert_eq!(
            (replay.status, replay.body.as_slice()),
            (201, b"{}".as_slice())
        );
        assert!(record.is_live(RECORD_TTL_SECS - 1));
        assert!(!record.is_live(RECORD_TTL_SECS));
    }
}
