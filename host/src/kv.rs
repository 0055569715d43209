//! `spin:key-value/key-value@3.0.0`: one SQLite file per store label, as Spin's default store.
//!
//! Every operation runs on a blocking thread; the store's connection is shared by all instances
//! (SQLite serialises writers; each operation is a single statement, hence atomic).

use crate::bindings::spin::key_value::key_value::{
    self as wit, Error, HostStore, HostStoreWithStore,
};
use rusqlite::OptionalExtension as _;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, ResourceTable, StreamReader};

type Shared = Arc<Mutex<rusqlite::Connection>>;

/// The app's key-value stores: label -> file, opened lazily and shared.
#[derive(Debug, Default)]
pub struct KvStores {
    files: BTreeMap<String, PathBuf>,
    open: Mutex<HashMap<String, Shared>>,
}

impl KvStores {
    /// One file per label under `dir` (`default` is `sqlite_key_value.db`, as in Spin).
    pub fn new<'a>(dir: PathBuf, labels: impl IntoIterator<Item = &'a String>) -> Self {
        let files = labels
            .into_iter()
            .map(|label| {
                let file = if label == "default" {
                    "sqlite_key_value.db".to_owned()
                } else {
                    format!("kv_{label}.db")
                };
                (label.clone(), dir.join(file))
            })
            .collect();
        Self {
            files,
            open: Mutex::default(),
        }
    }

    fn connect(&self, label: &str) -> Result<Shared, Error> {
        let path = self.files.get(label).ok_or(Error::NoSuchStore)?;
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = open.get(label) {
            return Ok(conn.clone());
        }
        let conn = rusqlite::Connection::open(path).map_err(other)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(other)?;
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
pub struct Store {
    conn: Shared,
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

fn store_conn<T: Send>(
    accessor: &Accessor<T, KvHost>,
    res: &Resource<Store>,
) -> wasmtime::Result<Shared> {
    accessor.with(|mut access| Ok(access.get().table.get(res)?.conn.clone()))
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
            } else if !view.access.stores.files.contains_key(&label) {
                Err(Error::NoSuchStore)
            } else {
                Ok(view.access.stores.clone())
            }
        });
        let stores = match stores {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let conn = tokio::task::spawn_blocking(move || stores.connect(&label))
            .await
            .map_err(|e| wasmtime::format_err!("key-value worker failed: {e}"))?;
        match conn {
            Ok(conn) => {
                accessor.with(|mut access| Ok(Ok(access.get().table.push(Store { conn })?)))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        self_: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let conn = store_conn(accessor, &self_)?;
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
        let conn = store_conn(accessor, &self_)?;
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
        let conn = store_conn(accessor, &self_)?;
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
        let conn = store_conn(accessor, &self_)?;
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
        let conn = store_conn(accessor, &self_)?;
        let keys = with_conn(conn, |c| {
            let mut stmt = c.prepare("SELECT key FROM spin_key_value ORDER BY key")?;
            let keys = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(keys)
        })
        .await?;
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
