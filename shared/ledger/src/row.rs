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

/// The column a `read_row!` field reads when its Rust name is not the column's:
/// `field: Type = Column("column_name")`. Selected exactly as a field named `column_name` would
/// be (`table.column_name`, or bare for a row read unqualified), so a row read through a table
/// alias or in a join reads the same SQL as before the field was renamed. The money columns keep
/// their names (schema.rs says why) while their Rust names end in `_money_micros`.
pub(crate) struct Column(pub &'static str);

/// What a `read_row!` field declared `field: Type = expression` selects: an SQL expression as
/// written, or a [`Column`] of the row's table.
pub(crate) trait Selected {
    /// Pushes it, `table` being the table (or alias) the row's plain columns are read from.
    fn push_to(self, table: &str, out: &mut Vec<String>);
}

impl Selected for &str {
    fn push_to(self, _table: &str, out: &mut Vec<String>) {
        out.push(self.to_owned());
    }
}

impl Selected for Column {
    fn push_to(self, table: &str, out: &mut Vec<String>) {
        out.push(column(table, self.0));
    }
}

/// A row declared with `read_row!`.
pub(crate) trait ReadRow: Columns {
    /// The table (or alias) its plain columns are read from.
    const TABLE: &'static str;
    /// Pushes its expressions, its plain columns read from `table`.
    fn select_from(table: &str, out: &mut Vec<String>);
}

/// Declares a row a read decodes: `read_row! { struct Name in "table alias" { field: Type, field:
/// Type = "SQL expression", field: Type = Column("column"), nested: OtherRow, ... } }`. A field
/// without an expression is the column of its name in the table; `Column` names the table's
/// column when the field's name is not the column's ([`Column`]); a field whose type is another
/// `read_row!` row selects that row's fields (from its own table). Select list and decoding are
/// generated from the one list.
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
        $crate::row::Selected::push_to($expr, $table, $out)
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

    read_row! {
        struct Renamed in "r" {
            a: i64,
            b_money_micros: i64 = Column("b_micros"),
        }
    }

    read_row! {
        struct HoldsRenamed in "" {
            renamed: Renamed,
            d: i64 = "o.d",
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

    #[test]
    fn a_field_named_otherwise_than_its_column_selects_the_column_as_a_plain_field_would() {
        // Qualified with the row's table (or alias) like its plain fields, also nested in a
        // join's row; bare for a read of its table alone or `RETURNING`.
        assert_eq!(select_list::<Renamed>(true), "r.a, r.b_micros");
        assert_eq!(select_list::<Renamed>(false), "a, b_micros");
        assert_eq!(select_list::<HoldsRenamed>(true), "r.a, r.b_micros, o.d");
        let row = vec![
            SqlValue::Integer(1),
            SqlValue::Integer(2),
            SqlValue::Integer(3),
        ];
        let read: HoldsRenamed = decode_row(&row).expect("decoded");
        assert_eq!(
            (read.renamed.a, read.renamed.b_money_micros, read.d),
            (1, 2, 3)
        );
    }
}
