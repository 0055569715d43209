//! `spin:key-value/key-value@3.0.0`: one SQLite file per store label, as Spin's default store,
//! or, for a label the runtime-config file puts on Redis, Redis ([`redis`]).
//!
//! SQLite: every operation runs on a blocking thread; the store's connection is shared by all
//! instances (SQLite serialises writers; each operation is a single statement, hence atomic).

mod redis;

use crate::bindings::spin::key_value::key_value::{
    self as wit, Error, HostStore, HostStoreWithStore,
};
use crate::runtime_config::KvBackend;
use rusqlite::OptionalExtension as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader};

type Shared = Arc<Mutex<rusqlite::Connection>>;

/// Where one label's store lives.
#[derive(Debug)]
enum Backend {
    /// A SQLite file (`None`: in memory, for the life of the process).
    Sqlite(Option<PathBuf>),
    /// A Redis server.
    Redis(Arc<redis::RedisStore>),
}

/// The app's key-value stores: label -> backend; SQLite ones opened lazily and shared.
#[derive(Debug, Default)]
pub struct KvStores {
    backends: BTreeMap<String, Backend>,
    open: Mutex<HashMap<String, Shared>>,
}

impl KvStores {
    /// The `configured` backends (from the runtime-config file), and for every other label one
    /// file under `dir` (`default` is `sqlite_key_value.db`, as in Spin).
    pub fn new<'a>(
        dir: PathBuf,
        labels: impl IntoIterator<Item = &'a String>,
        configured: &BTreeMap<String, KvBackend>,
    ) -> anyhow::Result<Self> {
        let mut backends = BTreeMap::new();
        for (label, backend) in configured {
            let backend = match backend {
                KvBackend::Spin { path } => Backend::Sqlite(path.clone()),
                KvBackend::Redis { url } => Backend::Redis(Arc::new(redis::RedisStore::new(url)?)),
            };
            backends.insert(label.clone(), backend);
        }
        for label in labels {
            backends.entry(label.clone()).or_insert_with(|| {
                let file = if label == "default" {
                    "sqlite_key_value.db".to_owned()
                } else {
                    format!("kv_{label}.db")
                };
                Backend::Sqlite(Some(dir.join(file)))
            });
        }
        Ok(Self {
            backends,
            open: Mutex::default(),
        })
    }

    async fn open_store(self: Arc<Self>, label: String) -> wasmtime::Result<Result<Store, Error>> {
        match self.backends.get(&label) {
            None => Ok(Err(Error::NoSuchStore)),
            Some(Backend::Redis(store)) => Ok(store.open().await.map(Store::Redis)),
            Some(Backend::Sqlite(_)) => {
                let conn = tokio::task::spawn_blocking(move || self.connect(&label))
                    .await
                    .map_err(|e| wasmtime::format_err!("key-value worker failed: {e}"))?;
                Ok(conn.map(Store::Sqlite))
            }
        }
    }

    fn connect(&self, label: &str) -> Result<Shared, Error> {
        let Some(Backend::Sqlite(path)) = self.backends.get(label) else {
            return Err(Error::NoSuchStore);
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = open.get(label) {
            return Ok(conn.clone());
        }
        let conn = crate::runtime_config::open_spin_file(path.as_deref()).map_err(other)?;
        conn.busy_timeout(crate::runtime_config::SPIN_BUSY_TIMEOUT)
            .map_err(other)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spin_key_value (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
        )
        .map_err(other)?;
        let conn = Arc::new(Mutex::new(conn));
        open.insert(label.to_owned(), conn.clone());
        Ok(conn)
    }
}

/// The stores one component may open (its `key_value_stores` in the manifest).
pub struct KvAccess {
    stores: Arc<KvStores>,
    allowed: BTreeSet<String>,
}

impl KvAccess {
    /// `allowed` labels of the app's `stores`.
    pub fn new(stores: Arc<KvStores>, allowed: BTreeSet<String>) -> Self {
        Self { stores, allowed }
    }
}

/// What the `spin:key-value` functions of one instance work on: its resource table and what its
/// component may open.
pub struct KvView<'a> {
    /// The instance's resource table (open stores live there).
    pub table: &'a mut ResourceTable,
    /// The stores its component may open.
    pub access: &'a KvAccess,
}

/// Links `spin:key-value` to a [`KvView`] of the store's data.
pub struct KvHost;

impl HasData for KvHost {
    type Data<'a> = KvView<'a>;
}

/// The host side of a key-value `store` resource.
pub enum Store {
    /// A shared SQLite connection.
    Sqlite(Shared),
    /// A Redis connection manager (cheap to clone, reconnects by itself).
    Redis(::redis::aio::ConnectionManager),
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Other(e.to_string())
}

async fn with_conn<R: Send + 'static>(
    conn: Shared,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R> + Send + 'static,
) -> wasmtime::Result<Result<R, Error>> {
    tokio::task::spawn_blocking(move || {
        let guard = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&guard).map_err(other)
    })
    .await
    .map_err(|e| wasmtime::format_err!("key-value worker failed: {e}"))
}

/// A clone of the store behind `res` (both kinds are handles to shared state).
fn store_of<T: Send>(
    accessor: &Accessor<T, KvHost>,
    res: &Resource<Store>,
) -> wasmtime::Result<Store> {
    accessor.with(|mut access| {
        Ok(match access.get().table.get(res)? {
            Store::Sqlite(conn) => Store::Sqlite(conn.clone()),
            Store::Redis(manager) => Store::Redis(manager.clone()),
        })
    })
}

impl wit::Host for KvView<'_> {}

impl HostStore for KvView<'_> {
    fn drop(&mut self, rep: Resource<Store>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl<T: Send> HostStoreWithStore<T> for KvHost {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<Store>, Error>> {
        let stores = accessor.with(|mut access| {
            let view = access.get();
            // As in Spin: an unlisted label is access-denied, whether or not it exists.
            if !view.access.allowed.contains(&label) {
                Err(Error::AccessDenied)
            } else if !view.access.stores.backends.contains_key(&label) {
                Err(Error::NoSuchStore)
            } else {
                Ok(view.access.stores.clone())
            }
        });
        let stores = match stores {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        match stores.open_store(label).await? {
            Ok(store) => accessor.with(|mut access| Ok(Ok(access.get().table.push(store)?))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        self_: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let conn = match store_of(accessor, &self_)? {
            Store::Redis(m) => return Ok(redis::get(&m, &key).await),
            Store::Sqlite(conn) => conn,
        };
        with_conn(conn, move |c| {
            c.query_row(
                "SELECT value FROM spin_key_value WHERE key = ?1",
                [&key],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
        })
        .await
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        self_: Resource<Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let conn = match store_of(accessor, &self_)? {
            Store::Redis(m) => return Ok(redis::set(&m, &key, &value).await),
            Store::Sqlite(conn) => conn,
        };
        with_conn(conn, move |c| {
            c.execute(
                "INSERT INTO spin_key_value (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                rusqlite::params![key, value],
            )
            .map(drop)
        })
        .await
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        self_: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let conn = match store_of(accessor, &self_)? {
            Store::Redis(m) => return Ok(redis::delete(&m, &key).await),
            Store::Sqlite(conn) => conn,
        };
        with_conn(conn, move |c| {
            c.execute("DELETE FROM spin_key_value WHERE key = ?1", [&key])
                .map(drop)
        })
        .await
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        self_: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let conn = match store_of(accessor, &self_)? {
            Store::Redis(m) => return Ok(redis::exists(&m, &key).await),
            Store::Sqlite(conn) => conn,
        };
        with_conn(conn, move |c| {
            c.query_row(
                "SELECT EXISTS(SELECT 1 FROM spin_key_value WHERE key = ?1)",
                [&key],
                |r| r.get::<_, bool>(0),
            )
        })
        .await
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        self_: Resource<Store>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let keys = match store_of(accessor, &self_)? {
            Store::Redis(m) => redis::keys(&m).await,
            Store::Sqlite(conn) => {
                with_conn(conn, |c| {
                    let mut stmt = c.prepare("SELECT key FROM spin_key_value ORDER BY key")?;
                    let keys = stmt
                        .query_map([], |r| r.get::<_, String>(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()?;
                    Ok(keys)
                })
                .await?
            }
        };
        let (keys, result) = match keys {
            Ok(keys) => (keys, Ok(())),
            Err(e) => (Vec::new(), Err(e)),
        };
        accessor.with(|mut access| {
            let keys = StreamReader::new(&mut access, keys)?;
            let done = FutureReader::new(&mut access, async move { wasmtime::error::Ok(result) })?;
            Ok((keys, done))
        })
    }
}
