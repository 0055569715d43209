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

/// A value a read decodes from its row's next columns, in the order it selects them. Declared
/// for rows with `read_row!`: the SELECT list and the decoding come from the same field list, so
/// a column cannot be decoded at another column's place.
pub(crate) trait Columns: Sized {
    /// Pushes the expressions it selects: for a single column, `name` of `table` (unqualified if
    /// `table` is empty); a row declared with `read_row!` pushes its own fields.
    fn select(table: &str, name: &str, out: &mut Vec<String>);
    /// Decodes it from `row` at column `*at`, and moves `*at` past its columns.
    fn decode(row: &Row, at: &mut usize) -> Result<Self>;
}

/// `table.name`, or `name` alone.
pub(crate) fn column(table: &str, name: &str) -> String {
    if table.is_empty() {
        name.to_owned()
    } else {
        format!("{table}.{name}")
    }
}

macro_rules! single_column {
    ($ty:ty, $read:expr) => {
        impl Columns for $ty {
            fn select(table: &str, name: &str, out: &mut Vec<String>) {
                out.push(column(table, name));
            }
            fn decode(row: &Row, at: &mut usize) -> Result<Self> {
                let value = $read(row, *at)?;
                *at += 1;
                Ok(value)
            }
        }
    };
}

single_column!(i64, int);
single_column!(Option<i64>, opt_int);
single_column!(String, text);
single_column!(Option<String>, opt_text);
single_column!(bool, |row, at| int(row, at).map(|v| v != 0));

/// The SELECT list of `R`, its columns qualified with its table (`qualified`) or bare (for
/// `RETURNING`, or a read of its table alone).
pub(crate) fn select_list<R: ReadRow>(qualified: bool) -> String {
    let mut out = Vec::new();
    R::select_from(if qualified { R::TABLE } else { "" }, &mut out);
    out.join(", ")
}

/// Decodes a whole row of [`select_list`]: every column it selected, and no other.
pub(crate) fn decode_row<R: Columns>(row: &Row) -> Result<R> {
    let mut at = 0;
    let value = R::decode(row, &mut at)?;
    if at != row.len() {
        return Err(LedgerError::Storage(StorageError::from_sqlite_message(
            format!("a read gave {} columns, its row decodes {at}", row.len()),
        )));
    }
    Ok(value)
}

/// A row declared with `read_row!`.
pub(crate) trait ReadRow: Columns {
    /// The table (or alias) its plain columns are read from.
    const TABLE: &'static str;
    /// Pushes its expressions, its plain columns read from `table`.
    fn select_from(table: &str, out: &mut Vec<String>);
}

/// Declares a row a read decodes: `read_row! { struct Name in "table alias" { field: Type, field:
/// Type = "SQL expression", nested: OtherRow, ... } }`. A field without an expression is the
/// column of its name in the table; a field whose type is another `read_row!` row selects that
/// row's fields (from its own table). Select list and decoding are generated from the one list.
macro_rules! read_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $table:literal {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident: $ty:ty $(= $expr:expr)?,)+
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty,)+
        }

        impl $crate::row::ReadRow for $name {
            const TABLE: &'static str = $table;
            fn select_from(table: &str, out: &mut Vec<String>) {
                $($crate::row::read_row!(@select table, out, $field, $ty $(, $expr)?);)+
            }
        }

        impl $crate::row::Columns for $name {
            fn select(_table: &str, _name: &str, out: &mut Vec<String>) {
                <Self as $crate::row::ReadRow>::select_from($table, out);
            }
            fn decode(row: &$crate::Row, at: &mut usize) -> $crate::Result<Self> {
                Ok(Self {
                    $($field: <$ty as $crate::row::Columns>::decode(row, at)?,)+
                })
            }
        }
    };
    (@select $table:ident, $out:ident, $field:ident, $ty:ty) => {
        <$ty as $crate::row::Columns>::select($table, stringify!($field), $out)
    };
    (@select $table:ident, $out:ident, $field:ident, $ty:ty, $expr:expr) => {
        $out.push(String::from($expr))
    };
}
pub(crate) use read_row;

#[cfg(test)]
mod tests {
    use super::*;

    read_row! {
        struct Inner in "i" {
            a: i64,
            b: Option<String>,
        }
    }

    read_row! {
        struct Outer in "" {
            inner: Inner,
            flag: bool = "EXISTS (SELECT 1, 2)",
            c: String = "o.c",
        }
    }

    #[test]
    fn a_read_row_selects_and_decodes_its_fields_in_one_order() {
        assert_eq!(
            select_list::<Outer>(true),
            "i.a, i.b, EXISTS (SELECT 1, 2), o.c"
        );
        assert_eq!(select_list::<Inner>(false), "a, b");
        let row = vec![
            SqlValue::Integer(7),
            SqlValue::Null,
            SqlValue::Integer(1),
            SqlValue::Text("x".into()),
        ];
        let outer: Outer = decode_row(&row).expect("decoded");
        assert_eq!(
            (outer.inner.a, outer.inner.b, outer.flag, outer.c),
            (7, None, true, "x".to_owned())
        );
        // A row of another shape is a storage error, never a value read at the wrong place.
        assert!(decode_row::<Outer>(&row[..3].to_vec()).is_err());
        assert!(decode_row::<Inner>(&row).is_err());
    }
}
