//! The values that cross the query API in both directions, whatever the database: a
//! statement's parameters ([`Value`], built with [`params!`](crate::params)) and a
//! result row's columns (read with [`Row::get`](super::Row::get) into any
//! [`FromValue`] type). Each backend converts to and from its own types here, so route
//! code never names a driver type.

use std::error::Error as StdError;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

/// One parameter or column value: SQLite's storage classes, which both backends can
/// carry (booleans travel as integers 0/1; blobs are not used by the demo).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (PostgreSQL: sent as whichever integer width the column has).
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
}

/// Converts a Rust value into a statement parameter; what [`params!`](crate::params)
/// calls on each argument.
pub trait ToValue {
    /// The parameter.
    fn to_value(&self) -> Value;
}

macro_rules! integer_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(i64::from(*self))
            }
        }
    )*};
}
integer_to_value!(i64, i32, u32, u16, u8, i16);

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

/// Statement parameters for [`Sql`](super::Sql)'s methods, numbered `?1`, `?2`, ... in
/// the SQL (or bare `?`, numbered in order), on every backend.
///
/// ```
/// use examples::db::Value;
///
/// let name = "Ana".to_owned();
/// let none: Option<i64> = None;
/// let params: &[Value] = examples::params![7_i64, name, none];
/// assert_eq!(params[0], Value::Integer(7));
/// assert_eq!(params[1], Value::Text("Ana".into()));
/// assert_eq!(params[2], Value::Null);
/// ```
#[macro_export]
macro_rules! params {
    () => {
        &[] as &[$crate::db::Value]
    };
    ($($param:expr),+ $(,)?) => {
        &[$($crate::db::ToValue::to_value(&$param)),+] as &[$crate::db::Value]
    };
}

/// Converts a column's value into a Rust value; what [`Row::get`](super::Row::get)
/// returns.
pub trait FromValue: Sized {
    /// The Rust value, or why the column's value does not fit.
    fn from_value(value: Value) -> Result<Self, String>;
}

impl FromValue for Value {
    fn from_value(value: Value) -> Result<Self, String> {
        Ok(value)
    }
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Integer(v) => Ok(v),
            // PostgreSQL's SUM and AVG of integers are NUMERIC: whole ones arrive here.
            Value::Real(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(v as i64),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

macro_rules! narrow_integer_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> Result<Self, String> {
                let wide = i64::from_value(value)?;
                <$t>::try_from(wide).map_err(|_| format!("{wide} does not fit {}", stringify!($t)))
            }
        }
    )*};
}
narrow_integer_from_value!(i32, u32, u16, u64, usize);

impl FromValue for f64 {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Real(v) => Ok(v),
            Value::Integer(v) => Ok(v as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> Result<Self, String> {
        Ok(i64::from_value(value)? != 0)
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Text(v) => Ok(v),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

// SQLite: the storage classes map one to one.

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(v) => ValueRef::Integer(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
        }))
    }
}

impl Value {
    pub(super) fn from_sqlite(value: rusqlite::types::ValueRef<'_>) -> Result<Value, String> {
        use rusqlite::types::ValueRef;
        match value {
            ValueRef::Null => Ok(Value::Null),
            ValueRef::Integer(v) => Ok(Value::Integer(v)),
            ValueRef::Real(v) => Ok(Value::Real(v)),
            ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec())
                .map(Value::Text)
                .map_err(|e| e.to_string()),
            ValueRef::Blob(_) => Err("blob columns are not supported".to_owned()),
        }
    }
}

// PostgreSQL: a parameter is encoded as the type the server inferred for its slot, so
// one `Value::Integer` fits an INTEGER, a BIGINT or a DOUBLE PRECISION column alike.

type BoxError = Box<dyn StdError + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Integer(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Integer(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Integer(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Value::Integer(v), &Type::FLOAT8) => (*v as f64).to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Real(v), &Type::FLOAT4) => (*v as f32).to_sql(ty, out),
            (Value::Text(v), _) if is_text(ty) => v.as_str().to_sql(ty, out),
            (value, ty) => Err(format!("cannot send {value:?} as a {ty} parameter").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        is_text(ty)
            || matches!(
                *ty,
                Type::INT8 | Type::INT4 | Type::INT2 | Type::BOOL | Type::FLOAT8 | Type::FLOAT4
            )
    }

    to_sql_checked!();
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Integer(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Integer(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Integer(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => Value::Real(numeric_to_f64(raw)?),
            _ => Value::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(ty: &Type) -> bool {
        <String as FromSql>::accepts(ty)
            || matches!(
                *ty,
                Type::INT8
                    | Type::INT4
                    | Type::INT2
                    | Type::BOOL
                    | Type::FLOAT8
                    | Type::FLOAT4
                    | Type::NUMERIC
            )
    }
}

/// NUMERIC's binary form (what SUM and AVG of integers return): a count of base-10000
/// digits, the weight of the first, a sign, a display scale, then the digits.
fn numeric_to_f64(raw: &[u8]) -> Result<f64, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated NUMERIC".into())
    };
    let digits = word(0)? as usize;
    let weight = word(1)? as i16;
    let sign = word(2)?;
    if sign == 0xC000 {
        return Ok(f64::NAN);
    }
    let mut value = 0.0_f64;
    for i in 0..digits {
        let exponent = i32::from(weight) - i as i32;
        value += f64::from(word(4 + i)?) * 10_000_f64.powi(exponent);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_decodes_whole_and_fractional_values() {
        // 1234567 = 123 * 10000^1 + 4567 * 10000^0
        let raw = [0, 2, 0, 1, 0, 0, 0, 0, 0, 123, 0x11, 0xD7];
        assert_eq!(numeric_to_f64(&raw).unwrap(), 1_234_567.0);
        // -0.5 = -(5000 * 10000^-1)
        let raw = [0, 1, 0xFF, 0xFF, 0x40, 0, 0, 1, 0x13, 0x88];
        assert_eq!(numeric_to_f64(&raw).unwrap(), -0.5);
        // 0: no digits
        assert_eq!(numeric_to_f64(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), 0.0);
    }

    #[test]
    fn whole_reals_read_as_integers() {
        assert_eq!(i64::from_value(Value::Real(42.0)), Ok(42));
        assert!(i64::from_value(Value::Real(0.5)).is_err());
        assert_eq!(Option::<i64>::from_value(Value::Null), Ok(None));
    }
}
