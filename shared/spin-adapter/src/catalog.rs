//! The per-instance catalog cache shared by every component.

use std::cell::RefCell;
use std::rc::Rc;

use ledger::catalog::Catalog;
use ledger::{LedgerError, Storage};

thread_local! {
    /// The instance's last loaded catalog. Wasm instances are single-threaded, so a thread-local
    /// is an instance-wide cache; it is revalidated against the stored version on every use
    /// ([`catalog`] asks for the version, [`with_catalog`]'s operations read it with their state).
    static CATALOG: RefCell<Option<Rc<Catalog>>> = const { RefCell::new(None) };
}

/// The current catalog, read inside the caller's ledger section: one cheap version query, and a
/// full load and validation only when the stored version changed since this instance last looked.
pub async fn catalog<S: Storage>(db: &S) -> ledger::Result<Rc<Catalog>> {
    let version = ledger::catalog::current_version(db).await?;
    let cached = CATALOG.with(|slot| slot.borrow().clone());
    if let Some(catalog) = cached
        && catalog.version == version
    {
        return Ok(catalog);
    }
    let loaded = Rc::new(ledger::catalog::load(db).await?);
    CATALOG.with(|slot| *slot.borrow_mut() = Some(Rc::clone(&loaded)));
    Ok(loaded)
}

/// How many times [`with_catalog`] reloads the catalog for one operation.
const CATALOG_RELOADS_MAX: usize = 3;

/// Runs a hot-path ledger operation (a debit, a call authorization) with the instance's cached
/// catalog, without a statement of its own to ask for the stored version: the operation reads the
/// version with its state and fails with `CatalogChanged`, having written nothing, if a new one
/// was put since. The catalog is then reloaded and the operation run again.
pub async fn with_catalog<S: Storage, T>(
    db: &S,
    operation: impl AsyncFn(&Catalog) -> ledger::Result<T>,
) -> ledger::Result<T> {
    let cached = CATALOG.with(|slot| slot.borrow().clone());
    let mut catalog = match cached {
        Some(catalog) => catalog,
        None => catalog(db).await?,
    };
    for _ in 0..CATALOG_RELOADS_MAX {
        match operation(&catalog).await {
            Err(LedgerError::CatalogChanged) => catalog = self::catalog(db).await?,
            other => return other,
        }
    }
    operation(&catalog).await
}
