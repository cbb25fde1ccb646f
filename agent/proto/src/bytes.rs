//! `#[serde(with = "crate::bytes")]`: a `Vec<u8>` encoded as one byte
//! string (its length, then its bytes) rather than as a sequence of
//! integers, which serde walks one element at a time.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// Serializes `v` as a byte string.
pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(v)
}

/// Deserializes a byte string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(ByteBuf)
}

struct ByteBuf;

impl<'de> Visitor<'de> for ByteBuf {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Chunk(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn a_byte_string_is_its_length_then_its_bytes() {
        let c = Chunk((0..=255).collect());
        let wire = postcard::to_stdvec(&c).unwrap();
        assert_eq!(&wire[..2], &[0x80, 0x02]);
        assert_eq!(&wire[2..], &c.0[..]);
        let back: Chunk = crate::frame::decode(&wire).unwrap();
        assert_eq!(back, c);
    }
}
