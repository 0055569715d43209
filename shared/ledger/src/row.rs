//! Reading typed values out of result rows; a mismatch is a storage error, never a panic.

use crate::storage::{Row, SqlValue, StorageError};
use crate::{LedgerError, Result};

fn mismatch(index: usize, expected: &str) -> LedgerError {
    LedgerError::Storage(StorageError::from_sqlite_message(format!(
        "column {index}: expected {expected}"
    )))
}

/// An INTEGER column.
pub fn int(row: &Row, index: usize) -> Result<i64> {
    match row.get(index) {
        Some(SqlValue::Integer(v)) => Ok(*v),
        _ => Err(mismatch(index, "integer")),
    }
}

/// A nullable INTEGER column.
pub fn opt_int(row: &Row, index: usize) -> Result<Option<i64>> {
    match row.get(index) {
        Some(SqlValue::Integer(v)) => Ok(Some(*v)),
        Some(SqlValue::Null) => Ok(None),
        _ => Err(mismatch(index, "integer or null")),
    }
}

/// A TEXT column.
pub fn text(row: &Row, index: usize) -> Result<String> {
    match row.get(index) {
        Some(SqlValue::Text(v)) => Ok(v.clone()),
        _ => Err(mismatch(index, "text")),
    }
}

/// A nullable TEXT column.
pub fn opt_text(row: &Row, index: usize) -> Result<Option<String>> {
    match row.get(index) {
        Some(SqlValue::Text(v)) => Ok(Some(v.clone())),
        Some(SqlValue::Null) => Ok(None),
        _ => Err(mismatch(index, "text or null")),
    }
}

/// Shorthands for parameters.
pub fn t(value: impl Into<String>) -> SqlValue {
    SqlValue::Text(value.into())
}

/// An integer parameter.
pub fn i(value: i64) -> SqlValue {
    SqlValue::Integer(value)
}

/// A nullable integer parameter.
pub fn oi(value: Option<i64>) -> SqlValue {
    value.map_or(SqlValue::Null, SqlValue::Integer)
}

/// A nullable text parameter.
pub fn ot(value: Option<&str>) -> SqlValue {
    value.map_or(SqlValue::Null, |v| SqlValue::Text(v.to_owned()))
}
