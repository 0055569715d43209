//! A key-value store on Redis, as Spin 4.1's `crates/key-value-redis`: the label is ignored
//! (one keyspace per URL), `get`/`set`/`delete`/`exists` are GET/SET/DEL/EXISTS, `get-keys`
//! is a SCAN of every key, one connection manager per configured label (made at the first
//! `open`, which then PINGs and ignores the answer), and errors are `other(message)`.
//!
//! Unlike Spin, the manager is bounded: Spin keeps the `redis` crate's defaults (no connect or
//! response timeout, six reconnection attempts spaced 1 s then up to 60-120 s apart), so while
//! Redis is down a guest call can wait for minutes. Here a connect gives up after
//! [`CONNECT_TIMEOUT`], a command after [`RESPONSE_TIMEOUT`], there is one connection attempt per
//! reconnection, and a command that failed because the connection was lost is sent once more
//! over the new one (all five commands are idempotent), so the first call after Redis is back
//! succeeds.

use super::Error;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, RedisError, RedisResult};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its answer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on the keys `get-keys` returns.
const KEYS_MAX: usize = 1_000_000;

/// One configured Redis store: its client and, once opened, its connection manager.
pub struct RedisStore {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.client.get_connection_info().addr)
            .finish()
    }
}

impl RedisStore {
    /// A store on `url` (checked when the runtime config was read).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: OnceCell::new(),
        })
    }

    /// The connection manager, made at the first call (a failure is retried at the next one).
    pub async fn open(&self) -> Result<ConnectionManager, Error> {
        let manager = self
            .manager
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_number_of_retries(0);
                self.client.get_connection_manager_with_config(config)
            })
            .await
            .map_err(other)?
            .clone();
        // As Spin's `after_open`: a failed PING only makes the manager reconnect.
        let _ = manager.clone().ping::<()>().await;
        Ok(manager)
    }
}

/// As Spin's `log_error`: the error's `Debug` text (the same as its `Display` for Redis).
fn other(e: RedisError) -> Error {
    eprintln!("key-value error: {e:?}");
    Error::Other(format!("{e:?}"))
}

/// Runs `command` once more if the connection was lost (the manager has reconnected by then).
async fn retried<T, F>(
    manager: &ConnectionManager,
    command: impl Fn(ConnectionManager) -> F,
) -> Result<T, Error>
where
    F: Future<Output = RedisResult<T>>,
{
    match command(manager.clone()).await {
        Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
            command(manager.clone()).await.map_err(other)
        }
        result => result.map_err(other),
    }
}

/// GET.
pub async fn get(manager: &ConnectionManager, key: &str) -> Result<Option<Vec<u8>>, Error> {
    retried(manager, |mut m| async move { m.get(key).await }).await
}

/// SET.
pub async fn set(manager: &ConnectionManager, key: &str, value: &[u8]) -> Result<(), Error> {
    retried(manager, |mut m| async move { m.set(key, value).await }).await
}

/// DEL.
pub async fn delete(manager: &ConnectionManager, key: &str) -> Result<(), Error> {
    retried(manager, |mut m| async move { m.del(key).await }).await
}

/// EXISTS.
pub async fn exists(manager: &ConnectionManager, key: &str) -> Result<bool, Error> {
    retried(manager, |mut m| async move { m.exists(key).await }).await
}

/// Every key, by SCAN (as Spin's `get-keys` of `spin:key-value@3.0.0`; as there, an error in
/// the middle of the scan ends it).
pub async fn keys(manager: &ConnectionManager) -> Result<Vec<String>, Error> {
    retried(manager, |mut m| async move {
        let mut scan = m.scan::<String>().await?;
        let mut keys = Vec::new();
        while let Some(key) = scan.next_item().await {
            if keys.len() >= KEYS_MAX {
                return Err(RedisError::from((
                    redis::ErrorKind::ClientError,
                    "too many keys",
                    format!("more than {KEYS_MAX}"),
                )));
            }
            keys.push(key);
        }
        Ok(keys)
    })
    .await
}
