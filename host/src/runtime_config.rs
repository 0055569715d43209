//! Reading Spin's runtime-config file (`spin up --runtime-config-file`) as Spin 4.1 reads it
//! (spinframework/spin `crates/runtime-config`, `crates/sqlite`, `crates/factor-key-value`).
//!
//! Supported: `[sqlite_database.LABEL]` of type `spin` or `libsql`, and
//! `[key_value_store.LABEL]` of type `spin` or `redis`. Every other top-level key Spin knows
//! is refused as not supported by this host; a key Spin does not know is refused with Spin's
//! own error. Unknown or missing fields are errors for every table (Spin ignores unknown fields
//! of key-value tables; this host does not).

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level keys Spin 4.1 reads that this host does not implement.
const SPIN_KEYS_NOT_SUPPORTED: &[&str] = &[
    "state_dir",
    "log_dir",
    "max_instance_memory",
    "config_provider",
    "variables_provider",
    "llm_compute",
    "outbound_networking",
    "client_tls",
    "outbound_http",
    "outbound_redis",
    "outbound_pg",
    "outbound_mysql",
    "outbound_mqtt",
];

/// Where one SQLite database label lives.
#[derive(Debug, Clone, PartialEq)]
pub enum SqliteBackend {
    /// A local SQLite file (`None`: a fresh in-memory database per connection, as Spin).
    Spin {
        /// The file, resolved as Spin resolves it (relative to the working directory).
        path: Option<PathBuf>,
        /// Whether the guest may `ATTACH` existing files (Spin's `allow_attach_file`).
        allow_attach_file: bool,
    },
    /// A libSQL server (sqld, Turso) over Hrana/HTTP.
    Libsql {
        /// `http://` or `https://` URL.
        url: String,
        /// Bearer token (may be empty).
        token: String,
    },
}

/// Where one key-value store label lives.
#[derive(Debug, Clone, PartialEq)]
pub enum KvBackend {
    /// A local SQLite file (`None`: in memory for the life of the process, as Spin).
    Spin {
        /// The file, resolved against the runtime-config file's directory (as Spin).
        path: Option<PathBuf>,
    },
    /// A Redis server; the label is ignored (one keyspace per URL, as Spin).
    Redis {
        /// `redis://` URL.
        url: String,
    },
}

/// The parsed runtime-config file: backends by label. Labels not named keep the host's defaults.
#[derive(Debug, Default)]
pub struct RuntimeConfig {
    /// `[sqlite_database.LABEL]` tables.
    pub sqlite: BTreeMap<String, SqliteBackend>,
    /// `[key_value_store.LABEL]` tables.
    pub kv: BTreeMap<String, KvBackend>,
}

/// A labelled table: its `type` and the rest (as Spin's `TomlRuntimeConfig`/`StoreConfig`).
#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    type_: String,
    #[serde(flatten)]
    config: toml::Table,
}

/// Spin's `InProcDatabase`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InProcDatabase {
    path: Option<PathBuf>,
    #[serde(default)]
    allow_attach_file: bool,
}

/// Spin's `LibSqlDatabase`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LibSqlDatabase {
    url: String,
    token: String,
}

/// Spin's `SpinKeyValueRuntimeConfig` (Spin does not deny unknown fields here; we do).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpinKeyValue {
    path: Option<PathBuf>,
}

/// Spin's `RedisKeyValueRuntimeConfig` (idem).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisKeyValue {
    url: String,
}

/// How long a connection to a `type = "spin"` file (SQLite or key-value) waits on another
/// connection's lock before "database is locked": rusqlite's default, hence Spin's. The app sets
/// its own on its SQLite connections (ledger `schema::FILE_PRAGMAS`), equal today by choice.
pub const SPIN_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens a `type = "spin"` store's SQLite file, creating its directory as Spin does, or a
/// fresh in-memory database when the runtime config gives no `path`. The error is the message
/// the guest sees.
pub fn open_spin_file(path: Option<&Path>) -> Result<rusqlite::Connection, String> {
    match path {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            rusqlite::Connection::open(path)
        }
        None => rusqlite::Connection::open_in_memory(),
    }
    .map_err(|e| e.to_string())
}

/// Reads and checks the runtime-config file at `path`. `cwd` is where Spin resolves relative
/// SQLite paths from (its working directory, not the file's directory).
pub fn load(path: &Path, cwd: &Path) -> Result<RuntimeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read runtime config file '{}'", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(one_line).with_context(|| {
        format!(
            "failed to parse runtime config file '{}' as toml",
            path.display()
        )
    })?;
    let file_dir = std::path::absolute(path)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    parse(&table, &file_dir, cwd)
}

/// Checks a parsed runtime-config table (see [`load`]).
fn parse(table: &toml::Table, file_dir: &Path, cwd: &Path) -> Result<RuntimeConfig> {
    if let Some(key) = table
        .keys()
        .find(|k| SPIN_KEYS_NOT_SUPPORTED.contains(&k.as_str()))
    {
        bail!("runtime config key `{key}` is not supported by the local host");
    }
    let sqlite = labelled(table, "sqlite_database")?
        .into_iter()
        .map(|(label, typed)| {
            let backend =
                sqlite_backend(typed, cwd).with_context(|| format!("[sqlite_database.{label}]"))?;
            Ok((label, backend))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let kv = labelled(table, "key_value_store")?
        .into_iter()
        .map(|(label, typed)| {
            let backend = kv_backend(typed, file_dir).with_context(|| {
                format!("could not configure key-value store with label '{label}'")
            })?;
            Ok((label, backend))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let mut unused: Vec<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "sqlite_database" | "key_value_store"))
        .collect();
    if !unused.is_empty() {
        unused.sort_unstable();
        bail!("unused runtime config key(s): {}", unused.join(", "));
    }
    Ok(RuntimeConfig { sqlite, kv })
}

fn labelled(table: &toml::Table, key: &str) -> Result<BTreeMap<String, Typed>> {
    let Some(value) = table.get(key) else {
        return Ok(BTreeMap::new());
    };
    value
        .clone()
        .try_into()
        .map_err(one_line)
        .with_context(|| format!("[{key}]: expected tables with a `type`"))
}

fn sqlite_backend(typed: Typed, cwd: &Path) -> Result<SqliteBackend> {
    match typed.type_.as_str() {
        "spin" => {
            let InProcDatabase {
                path,
                allow_attach_file,
            } = typed.config.try_into().map_err(one_line)?;
            Ok(SqliteBackend::Spin {
                path: path.map(|p| cwd.join(p)),
                allow_attach_file,
            })
        }
        "libsql" => {
            let LibSqlDatabase { url, token } = typed.config.try_into().map_err(one_line)?;
            check_url(&url).with_context(|| {
                // Spin's wording, trailing space included.
                format!("unexpected libSQL URL '{url}' in runtime config file ")
            })?;
            Ok(SqliteBackend::Libsql { url, token })
        }
        kind => bail!("Unknown database kind: {kind}"),
    }
}

/// TOML's error text (which may span lines, with a snippet) on one line: start-up errors are
/// one line.
fn one_line(e: impl std::fmt::Display) -> anyhow::Error {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    anyhow::anyhow!("{}", lines.join(" "))
}

/// Spin's `check_url`.
fn check_url(url: &str) -> Result<()> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        bail!(
            "URL does not start with 'https://' or 'http://'. Spin currently only supports \
             talking to libSQL databases over HTTP(S)"
        )
    }
}

fn kv_backend(typed: Typed, file_dir: &Path) -> Result<KvBackend> {
    match typed.type_.as_str() {
        "spin" => {
            let SpinKeyValue { path } = typed
                .config
                .try_into()
                .map_err(one_line)
                .context("could not parse key-value runtime config")?;
            Ok(KvBackend::Spin {
                path: path.map(|p| file_dir.join(p)),
            })
        }
        "redis" => {
            let RedisKeyValue { url } = typed
                .config
                .try_into()
                .map_err(one_line)
                .context("could not parse key-value runtime config")?;
            redis::parse_redis_url(&url)
                .context("Invalid Redis URL")
                .context("could not make key-value store from runtime config")?;
            Ok(KvBackend::Redis { url })
        }
        kind => {
            bail!("the store type '{kind}' was not registered with the config resolver")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<RuntimeConfig> {
        let table: toml::Table = toml::from_str(text)?;
        parse(&table, Path::new("/rc"), Path::new("/cwd"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parsed(text).expect_err(text))
    }

    #[test]
    fn backends_and_paths_resolve_as_spin() -> Result<()> {
        let config = parsed(
            r#"
            [sqlite_database.default]
            type = "libsql"
            url = "http://127.0.0.1:8080"
            token = ""
            [sqlite_database.local]
            type = "spin"
            path = "data/local.db"
            [sqlite_database.memory]
            type = "spin"
            [key_value_store.default]
            type = "redis"
            url = "redis://127.0.0.1:6379"
            [key_value_store.cache]
            type = "spin"
            path = "kv/cache.db"
            [key_value_store.abs]
            type = "spin"
            path = "/abs/kv.db"
            "#,
        )?;
        assert_eq!(
            config.sqlite["default"],
            SqliteBackend::Libsql {
                url: "http://127.0.0.1:8080".into(),
                token: String::new()
            }
        );
        // Spin resolves SQLite paths against the working directory...
        assert_eq!(
            config.sqlite["local"],
            SqliteBackend::Spin {
                path: Some("/cwd/data/local.db".into()),
                allow_attach_file: false
            }
        );
        assert_eq!(
            config.sqlite["memory"],
            SqliteBackend::Spin {
                path: None,
                allow_attach_file: false
            }
        );
        // ...and key-value paths against the runtime-config file's directory.
        assert_eq!(
            config.kv["cache"],
            KvBackend::Spin {
                path: Some("/rc/kv/cache.db".into())
            }
        );
        assert_eq!(
            config.kv["abs"],
            KvBackend::Spin {
                path: Some("/abs/kv.db".into())
            }
        );
        assert!(matches!(config.kv["default"], KvBackend::Redis { .. }));
        assert!(parsed("")?.sqlite.is_empty());
        Ok(())
    }

    #[test]
    fn errors_use_spins_wording() {
        assert_eq!(
            error("baz = 1\nabc = 2"),
            "unused runtime config key(s): abc, baz"
        );
        assert_eq!(
            error("[sqlite_database.x]\ntype = \"mysql\""),
            "[sqlite_database.x]: Unknown database kind: mysql"
        );
        assert_eq!(
            error(
                "[sqlite_database.x]\ntype = \"libsql\"\nurl = \"libsql://db.example\"\ntoken = \"t\""
            ),
            "[sqlite_database.x]: unexpected libSQL URL 'libsql://db.example' in runtime config \
             file : URL does not start with 'https://' or 'http://'. Spin currently only supports \
             talking to libSQL databases over HTTP(S)"
        );
        assert!(
            error("[sqlite_database.x]\ntype = \"libsql\"\nurl = \"http://h\"")
                .contains("missing field `token`")
        );
        assert!(
            error("[sqlite_database.x]\ntype = \"spin\"\nfile = \"a.db\"")
                .contains("unknown field `file`")
        );
        assert_eq!(
            error("[key_value_store.x]\ntype = \"azure_cosmos\""),
            "could not configure key-value store with label 'x': the store type 'azure_cosmos' \
             was not registered with the config resolver"
        );
        assert!(
            error("[key_value_store.x]\ntype = \"redis\"")
                .starts_with("could not configure key-value store with label 'x': could not parse key-value runtime config: missing field `url`")
        );
        assert!(
            error("[key_value_store.x]\ntype = \"redis\"\nurl = \"nope\"")
                .contains("Invalid Redis URL")
        );
        assert_eq!(
            error("[[config_provider]]\ntype = \"vault\""),
            "runtime config key `config_provider` is not supported by the local host"
        );
        assert!(error("[sqlite_database.x]\npath = \"a.db\"").contains("missing field `type`"));
        for text in [
            "[key_value_store.x]\ntype = \"redis\"\nurl = \"redis://h\"\nport = 1",
            "[sqlite_database.x]\ntype = \"spin\"\nfile = \"a.db\"",
            "[sqlite_database]\nx = 1",
        ] {
            assert_eq!(error(text).lines().count(), 1, "{text}");
        }
    }
}
