//! Decoding within a memory budget.
//!
//! postcard spends at least one wire byte per element, but an element can
//! take far more memory once decoded: an empty `String` is one byte on the
//! wire and 24 in memory, an enum's smallest variant a few bytes against the
//! size of its largest. A frame of millions of empty entries would decode to
//! many times its length. [`decode_within`] charges every element of every
//! sequence and map at its in-memory size, and every string and byte buffer
//! at its length, against one budget, and fails the decode as soon as the
//! budget is spent — before the memory is taken.
//!
//! The charge is made through an adapter around the format's deserializer,
//! so the message types need no annotation.

use std::cell::Cell;
use std::fmt;
use std::mem::size_of;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// Bytes a decode may still take.
#[derive(Debug)]
pub struct Budget {
    left: Cell<u64>,
    limit: u64,
    refused: Cell<bool>,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Budget {
        Budget {
            left: Cell::new(limit),
            limit,
            refused: Cell::new(false),
        }
    }

    /// Bytes charged so far.
    pub fn spent(&self) -> u64 {
        self.limit - self.left.get()
    }

    /// Whether a charge was refused (the format's error may not carry the
    /// reason: postcard drops custom messages).
    pub fn exhausted(&self) -> bool {
        self.refused.get()
    }

    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let bytes = bytes as u64;
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.refused.set(true);
                Err(E::custom(format_args!(
                    "the message would take more than {} bytes once decoded",
                    self.limit
                )))
            }
        }
    }
}

/// Deserializes `T` from `de`, failing once the values decoded would take
/// more than `budget` allows.
pub fn decode_within<'de, T, D>(de: D, budget: &Budget) -> Result<T, D::Error>
where
    T: de::Deserialize<'de>,
    D: Deserializer<'de>,
{
    budget.charge::<D::Error>(size_of::<T>())?;
    T::deserialize(Charged { inner: de, budget })
}

/// A deserializer whose every visitor is charged.
struct Charged<'b, D> {
    inner: D,
    budget: &'b Budget,
}

/// A visitor whose sequences, maps, enums and buffers are charged.
struct ChargedVisitor<'b, V> {
    inner: V,
    budget: &'b Budget,
    /// Whether a sequence it visits is a collection whose elements each
    /// take memory of their own (a `Vec`), rather than the fields of a
    /// struct or tuple, already counted in the size of their parent.
    elements: bool,
}

/// `visitor`, charged, for a collection whose elements take memory of
/// their own.
fn of_elements<V>(visitor: V, budget: &Budget) -> ChargedVisitor<'_, V> {
    ChargedVisitor {
        inner: visitor,
        budget,
        elements: true,
    }
}

/// `visitor`, charged, for a struct's, tuple's or variant's fields
/// (counted in their parent's size already).
fn of_fields<V>(visitor: V, budget: &Budget) -> ChargedVisitor<'_, V> {
    ChargedVisitor {
        inner: visitor,
        budget,
        elements: false,
    }
}

/// A seed that deserializes through [`Charged`].
struct ChargedSeed<'b, S> {
    inner: S,
    budget: &'b Budget,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for ChargedSeed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Charged {
            inner: d,
            budget: self.budget,
        })
    }
}

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.inner.$method(of_elements(visitor, self.budget))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Charged<'_, D> {
    type Error = D::Error;

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_unit_struct(name, of_fields(visitor, self.budget))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_newtype_struct(name, of_fields(visitor, self.budget))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_tuple(len, of_fields(visitor, self.budget))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_tuple_struct(name, len, of_fields(visitor, self.budget))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_struct(name, fields, of_fields(visitor, self.budget))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .deserialize_enum(name, variants, of_fields(visitor, self.budget))
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! pass {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ChargedVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    pass!(
        visit_bool: bool,
        visit_i8: i8,
        visit_i16: i16,
        visit_i32: i32,
        visit_i64: i64,
        visit_i128: i128,
        visit_u8: u8,
        visit_u16: u16,
        visit_u32: u32,
        visit_u64: u64,
        visit_u128: u128,
        visit_f32: f32,
        visit_f64: f64,
        visit_char: char,
    );

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.budget.charge::<E>(v.len())?;
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        self.budget.charge::<E>(v.len())?;
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        self.budget.charge::<E>(v.len())?;
        self.inner.visit_string(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        self.budget.charge::<E>(v.len())?;
        self.inner.visit_bytes(v)
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<V::Value, E> {
        self.budget.charge::<E>(v.len())?;
        self.inner.visit_borrowed_bytes(v)
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<V::Value, E> {
        self.budget.charge::<E>(v.len())?;
        self.inner.visit_byte_buf(v)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Charged {
            inner: d,
            budget: self.budget,
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Charged {
            inner: d,
            budget: self.budget,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(ChargedSeq {
            inner: seq,
            budget: self.budget,
            elements: self.elements,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(ChargedMap {
            inner: map,
            budget: self.budget,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(ChargedEnum {
            inner: data,
            budget: self.budget,
        })
    }
}

/// Charges each element of a collection at its in-memory size once it is
/// decoded, before it is stored (a struct's or tuple's fields are not charged again).
struct ChargedSeq<'b, A> {
    inner: A,
    budget: &'b Budget,
    elements: bool,
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for ChargedSeq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let element = self.inner.next_element_seed(ChargedSeed {
            inner: seed,
            budget: self.budget,
        })?;
        if self.elements && element.is_some() {
            self.budget.charge::<A::Error>(size_of::<S::Value>())?;
        }
        Ok(element)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// Charges each key and value at its in-memory size before it is decoded.
struct ChargedMap<'b, A> {
    inner: A,
    budget: &'b Budget,
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for ChargedMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = self.inner.next_key_seed(ChargedSeed {
            inner: seed,
            budget: self.budget,
        })?;
        if key.is_some() {
            self.budget.charge::<A::Error>(size_of::<K::Value>())?;
        }
        Ok(key)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.budget.charge::<A::Error>(size_of::<S::Value>())?;
        self.inner.next_value_seed(ChargedSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// Passes the charge on into an enum's variant.
struct ChargedEnum<'b, A> {
    inner: A,
    budget: &'b Budget,
}

impl<'de, 'b, A: de::EnumAccess<'de>> de::EnumAccess<'de> for ChargedEnum<'b, A> {
    type Error = A::Error;
    type Variant = ChargedVariant<'b, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let seed = ChargedSeed {
            inner: seed,
            budget: self.budget,
        };
        let (value, variant) = self.inner.variant_seed(seed)?;
        let variant = ChargedVariant {
            inner: variant,
            budget: self.budget,
        };
        Ok((value, variant))
    }
}

struct ChargedVariant<'b, A> {
    inner: A,
    budget: &'b Budget,
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for ChargedVariant<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.newtype_variant_seed(ChargedSeed {
            inner: seed,
            budget: self.budget,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner
            .tuple_variant(len, of_fields(visitor, self.budget))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner
            .struct_variant(fields, of_fields(visitor, self.budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<T: de::DeserializeOwned>(wire: &[u8], limit: u64) -> Result<(T, u64), String> {
        let budget = Budget::new(limit);
        let mut de = postcard::Deserializer::from_bytes(wire);
        let value =
            decode_within::<T, _>(&mut de, &budget).map_err(|e| match budget.exhausted() {
                true => "more than the budget".to_string(),
                false => e.to_string(),
            })?;
        Ok((value, budget.spent()))
    }

    #[test]
    fn empty_strings_are_charged_at_their_size_in_memory() {
        let many: Vec<String> = vec![String::new(); 100_000];
        let wire = postcard::to_stdvec(&many).unwrap();
        assert!(wire.len() < 100_010);
        let (back, spent) = decode::<Vec<String>>(&wire, 64 << 20).unwrap();
        assert_eq!(back, many);
        assert_eq!(spent, 24 + 24 * 100_000);
        // A budget of eight times the wire length refuses it.
        let err = decode::<Vec<String>>(&wire, 8 * wire.len() as u64).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn nested_values_charge_their_contents() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        enum Item {
            Small,
            Named {
                name: String,
                data: Vec<(u64, Vec<u8>)>,
            },
            Opt(Option<Box<Item>>),
        }
        let items = vec![
            Item::Small,
            Item::Named {
                name: "abc".into(),
                data: vec![(1, vec![7; 10])],
            },
            Item::Opt(Some(Box::new(Item::Named {
                name: "de".into(),
                data: vec![],
            }))),
        ];
        let wire = postcard::to_stdvec(&items).unwrap();
        let (back, spent) = decode::<Vec<Item>>(&wire, 1 << 20).unwrap();
        assert_eq!(back, items);
        let item = size_of::<Item>() as u64;
        let pair = size_of::<(u64, Vec<u8>)>() as u64;
        // The Vec, three items, "abc", one pair, ten bytes, "de".
        // (The boxed item is decoded by `Box`'s own impl, uncharged.)
        assert_eq!(spent, 24 + 3 * item + 3 + pair + 10 + 2);
    }

    #[test]
    fn a_claimed_length_alone_takes_nothing() {
        // Claims 2^32 - 1 strings, carries none.
        let wire = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let err = decode::<Vec<String>>(&wire, 1 << 20).unwrap_err();
        assert!(!err.contains("more than"), "{err}");
    }
}
