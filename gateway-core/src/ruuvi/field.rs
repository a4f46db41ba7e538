//! A measurement field that is either absent from the data format, marked "not available" by the
//! tag (a sentinel value), or present. Absent fields are omitted from JSON; unavailable ones are `null`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Field<T> {
    /// The data format does not carry this field.
    #[default]
    Absent,
    /// The format carries the field but the tag sent the "not available" sentinel.
    Unavailable,
    Value(T),
}

impl<T> Field<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Value(v) => Some(v),
            _ => None,
        }
    }

    /// `Value(v)` when `v` is not the sentinel, otherwise `Unavailable`.
    pub fn unless(value: T, sentinel: T) -> Self
    where
        T: PartialEq,
    {
        if value == sentinel {
            Field::Unavailable
        } else {
            Field::Value(value)
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Field::Absent => Field::Absent,
            Field::Unavailable => Field::Unavailable,
            Field::Value(v) => Field::Value(f(v)),
        }
    }
}

impl<T: Copy> Field<T> {
    pub fn value(&self) -> Option<T> {
        self.get().copied()
    }
}

/// Numbers are written the way the Ruuvi Gateway writes them: whole values without a fraction
/// (`100044`, not `100044.0`).
pub trait FieldValue {
    fn serialize_value<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
}

impl FieldValue for f64 {
    fn serialize_value<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
        if self.is_finite() && self.fract() == 0.0 && self.abs() < EXACT_INTEGER_LIMIT {
            serializer.serialize_i64(*self as i64)
        } else if self.is_finite() {
            serializer.serialize_f64(*self)
        } else {
            serializer.serialize_none()
        }
    }
}

macro_rules! plain_field_value {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn serialize_value<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.serialize(serializer)
            }
        }
    )*};
}
plain_field_value!(u8, u32, i32, bool, String);

impl<T: FieldValue> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Value(v) => v.serialize_value(serializer),
            _ => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(v) => Field::Value(v),
            None => Field::Unavailable,
        })
    }
}
