//! The per-instance catalog cache shared by every component.

use std::cell::RefCell;
use std::rc::Rc;

use ledger::Storage;
use ledger::catalog::Catalog;

thread_local! {
    /// The instance's last loaded catalog. Wasm instances are single-threaded, so a thread-local
    /// is an instance-wide cache; it is revalidated against the stored version on every use.
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
