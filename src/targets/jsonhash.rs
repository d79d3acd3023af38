//! FNV-1a of a value's compact JSON, as serde_json prints it, computed while
//! it is printed: no buffer, and text with nothing to escape fed whole.
//! Config hashes (labels that tell whether a running container matches its
//! definition) hash every service this way, so this is on a large build's
//! path; the bytes hashed are exactly serde_json's, so the hashes are the
//! ones earlier versions wrote.
//!
//! Only the shapes configs are made of are handled here (maps with string
//! keys, structs, sequences, strings, integers, booleans, options, unit
//! variants); anything else (floats, other map keys, data-carrying enum
//! variants) reports [`Unsupported`] and the caller hashes serde_json's
//! own output instead.

use serde::Serialize;
use serde::ser::{self, Impossible};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv(OFFSET);
    h.bytes(bytes);
    h.0
}

/// The FNV-1a of the compact JSON of `value`, or `None` for a value of a
/// shape this module leaves to serde_json.
pub fn hash(value: &(impl Serialize + ?Sized)) -> Option<u64> {
    let mut h = Fnv(OFFSET);
    value.serialize(Json(&mut h)).ok()?;
    Some(h.0)
}

struct Fnv(u64);

impl Fnv {
    #[inline]
    fn bytes(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        self.0 = h;
    }

    /// A JSON string, escaped as serde_json escapes it: each byte is
    /// checked and hashed in the same pass.
    fn string(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        /// Bytes serde_json escapes: controls, `"` and `\\`.
        static ESCAPED: [bool; 256] = {
            let mut t = [false; 256];
            let mut c = 0;
            while c < 0x20 {
                t[c] = true;
                c += 1;
            }
            t[b'"' as usize] = true;
            t[b'\\' as usize] = true;
            t
        };
        let mut h = (self.0 ^ u64::from(b'"')).wrapping_mul(PRIME);
        for &c in s.as_bytes() {
            if ESCAPED[usize::from(c)] {
                let esc: &[u8] = match c {
                    b'"' => b"\\\"",
                    b'\\' => b"\\\\",
                    0x08 => b"\\b",
                    0x0c => b"\\f",
                    b'\n' => b"\\n",
                    b'\r' => b"\\r",
                    b'\t' => b"\\t",
                    _ => &[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(c >> 4)],
                        HEX[usize::from(c & 0xf)],
                    ],
                };
                for &e in esc {
                    h = (h ^ u64::from(e)).wrapping_mul(PRIME);
                }
                continue;
            }
            h = (h ^ u64::from(c)).wrapping_mul(PRIME);
        }
        self.0 = (h ^ u64::from(b'"')).wrapping_mul(PRIME);
    }
}

/// A shape left to serde_json.
#[derive(Debug)]
pub struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("left to serde_json")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

type Res = Result<(), Unsupported>;

struct Json<'h>(&'h mut Fnv);

/// An array or object being hashed: whether an element came yet.
struct Compound<'h> {
    h: &'h mut Fnv,
    first: bool,
}

impl Compound<'_> {
    fn comma(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.h.bytes(b",");
        }
    }
}

/// Enum variants that carry data: left to serde_json.
macro_rules! refuse_variants {
    () => {
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Res {
            Err(Unsupported)
        }

        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Unsupported> {
            Err(Unsupported)
        }

        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Unsupported> {
            Err(Unsupported)
        }
    };
}

macro_rules! ints {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Res {
            self.0.bytes(itoa::Buffer::new().format(v).as_bytes());
            Ok(())
        }
    )*};
}

impl<'h> ser::Serializer for Json<'h> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Compound<'h>;
    type SerializeTuple = Compound<'h>;
    type SerializeTupleStruct = Compound<'h>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = Compound<'h>;
    type SerializeStruct = Compound<'h>;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    refuse_variants!();

    fn serialize_bool(self, v: bool) -> Res {
        self.0.bytes(if v { b"true" } else { b"false" });
        Ok(())
    }

    ints!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);

    fn serialize_f32(self, _: f32) -> Res {
        Err(Unsupported)
    }

    fn serialize_f64(self, _: f64) -> Res {
        Err(Unsupported)
    }

    fn serialize_char(self, v: char) -> Res {
        self.0.string(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Res {
        self.0.string(v);
        Ok(())
    }

    fn serialize_bytes(self, _: &[u8]) -> Res {
        Err(Unsupported)
    }

    fn serialize_none(self) -> Res {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Res {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Res {
        self.0.bytes(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Res {
        self.serialize_unit()
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Res {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Res {
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'h>, Unsupported> {
        self.0.bytes(b"[");
        Ok(Compound {
            h: self.0,
            first: true,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'h>, Unsupported> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Compound<'h>, Unsupported> {
        self.serialize_seq(Some(len))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'h>, Unsupported> {
        self.0.bytes(b"{");
        Ok(Compound {
            h: self.0,
            first: true,
        })
    }

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Compound<'h>, Unsupported> {
        self.serialize_map(Some(len))
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Res {
        self.comma();
        value.serialize(Json(self.h))
    }
    fn end(self) -> Res {
        self.h.bytes(b"]");
        Ok(())
    }
}

/// Tuples are arrays, as sequences are.
macro_rules! like_seq {
    ($($tr:ident: $f:ident),*) => {$(
        impl ser::$tr for Compound<'_> {
            type Ok = ();
            type Error = Unsupported;
            fn $f<T: Serialize + ?Sized>(&mut self, value: &T) -> Res {
                ser::SerializeSeq::serialize_element(self, value)
            }
            fn end(self) -> Res {
                ser::SerializeSeq::end(self)
            }
        }
    )*};
}

like_seq!(SerializeTuple: serialize_element, SerializeTupleStruct: serialize_field);

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Res {
        self.comma();
        key.serialize(Key(self.h))?;
        self.h.bytes(b":");
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Res {
        value.serialize(Json(self.h))
    }
    fn end(self) -> Res {
        self.h.bytes(b"}");
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Res {
        self.comma();
        self.h.string(key);
        self.h.bytes(b":");
        value.serialize(Json(self.h))
    }
    fn end(self) -> Res {
        ser::SerializeMap::end(self)
    }
}

/// Map keys: strings only (others are left to serde_json).
struct Key<'h>(&'h mut Fnv);

macro_rules! unsupported {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, _: $t) -> Res {
            Err(Unsupported)
        }
    )*};
}

impl ser::Serializer for Key<'_> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Impossible<(), Unsupported>;
    type SerializeTuple = Impossible<(), Unsupported>;
    type SerializeTupleStruct = Impossible<(), Unsupported>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = Impossible<(), Unsupported>;
    type SerializeStruct = Impossible<(), Unsupported>;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    refuse_variants!();

    fn serialize_str(self, v: &str) -> Res {
        self.0.string(v);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Res {
        value.serialize(self)
    }

    unsupported!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16,
        serialize_i32: i32, serialize_i64: i64, serialize_i128: i128, serialize_u8: u8,
        serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128,
        serialize_f32: f32, serialize_f64: f64, serialize_char: char,
        serialize_bytes: &[u8], serialize_unit_struct: &'static str);

    fn serialize_none(self) -> Res {
        Err(Unsupported)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Res {
        Err(Unsupported)
    }

    fn serialize_unit(self) -> Res {
        Err(Unsupported)
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Res {
        Err(Unsupported)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, Unsupported> {
        Err(Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn reference(v: &(impl Serialize + ?Sized)) -> u64 {
        fnv1a(&serde_json::to_vec(v).expect("serializes"))
    }

    /// JSON values without floats (those are left to serde_json).
    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x20\"\\\\\\x7f]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The hash is that of serde_json's bytes, escapes and all.
        #[test]
        fn hashes_what_serde_json_prints(v in values()) {
            prop_assert_eq!(hash(&v), Some(reference(&v)));
        }
    }

    #[test]
    fn typed_values_hash_as_serde_json_prints_them() {
        #[derive(Serialize)]
        enum Kind {
            Plain,
        }
        #[derive(Serialize)]
        struct Newtype(String);
        #[derive(Serialize)]
        struct Config {
            name: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            gone: Option<u8>,
            none: Option<u8>,
            some: Option<i32>,
            kind: Kind,
            newtype: Newtype,
            pair: (&'static str, u16),
            list: Vec<char>,
            map: std::collections::BTreeMap<String, Vec<bool>>,
        }
        let c = Config {
            name: "a \"b\" \\ c\n\u{1}\u{7f}é",
            gone: None,
            none: None,
            some: Some(-5),
            kind: Kind::Plain,
            newtype: Newtype("x".into()),
            pair: ("CMD-SHELL", 8080),
            list: vec!['\t', 'z'],
            map: [("k".to_string(), vec![true, false])].into(),
        };
        assert_eq!(hash(&c), Some(reference(&c)));
    }

    #[test]
    fn floats_and_other_keys_are_left_to_serde_json() {
        assert_eq!(hash(&json!({"a": 1.5})), None);
        let numbered: std::collections::BTreeMap<u8, u8> = [(1, 2)].into();
        assert_eq!(hash(&numbered), None);
    }
}
