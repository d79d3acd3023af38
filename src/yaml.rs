//! YAML emission, in one place so the YAML library can be swapped.
//!
//! Artifacts are built as serde values and printed by the small emitter
//! here, never assembled from strings. The emitter writes a string plain
//! only when every YAML reader (YAML 1.1 ones included, such as
//! docker-compose v1 and many Kubernetes tools) reads it back as that same
//! string: `yes`, `no`, `on`, `off`, `~`, `8080:80` (a base-60 number in
//! YAML 1.1), `0o17`, `1e3` and anything with special characters are
//! double-quoted. Parsing (tests, drift) uses serde_yaml.

use serde::Serialize;
use serde_json::Value;

/// Serialize `value` as a YAML document.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> String {
    // Most documents are a few hundred bytes to a few KB: start with room
    // for one, rather than regrow (and copy) from nothing.
    let mut out = String::with_capacity(1024);
    write_doc(&mut out, value);
    out
}

/// As [`to_string`], for a value already built.
pub fn value_to_string(v: &Value) -> String {
    to_string(v)
}

/// Append `value` as a YAML document to `out`. The value is printed
/// straight from its `Serialize` implementation, with no intermediate
/// tree: the same text as printing its `serde_json::Value`.
pub fn write_doc<T: Serialize + ?Sized>(out: &mut String, value: &T) {
    // Plain data (maps, strings, numbers) always serializes.
    value
        .serialize(Ser {
            out,
            place: Place::Top,
        })
        .expect("plain data serializes");
}

/// Append `key: value`, an entry of a block map whose keys are at
/// `indent`: the text the entry has when its map is printed whole. With
/// [`write_item`], a large document can be written (and flushed) in
/// parts, its outer levels written by hand: the caller writes the `key:`
/// line that opens a nested map or sequence, or `key: {}` / `key: []` when
/// it has no entries.
pub fn write_entry<T: Serialize + ?Sized>(out: &mut String, indent: usize, key: &str, value: &T) {
    self::indent(out, indent);
    write_str(out, key);
    out.push(':');
    value
        .serialize(Ser {
            out,
            place: Place::MapValue(indent),
        })
        .expect("plain data serializes");
}

/// Append `- value`, an item of a block sequence whose dashes are at
/// `indent` (see [`write_entry`]).
pub fn write_item<T: Serialize + ?Sized>(out: &mut String, indent: usize, value: &T) {
    self::indent(out, indent);
    out.push_str("- ");
    value
        .serialize(Ser {
            out,
            place: Place::SeqItem(indent),
        })
        .expect("plain data serializes");
}

/// Append `s` as a YAML scalar, quoted when it must be, with no newline.
pub fn write_scalar(out: &mut String, s: &str) {
    write_str(out, s);
}

/// Several YAML documents separated by `---`.
pub fn to_multi_doc<T: Serialize>(values: &[T]) -> String {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        write_doc(&mut out, v);
    }
    out
}

/// Parse YAML back (tests and drift checks).
pub fn from_str<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_yaml::from_str(s).map_err(|e| e.to_string())
}

/// Words that some YAML reader takes for a boolean or null.
const SPECIAL: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
];

/// The bytes a plain scalar may hold: ASCII letters, digits and `_./@+-`.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'@' | b'+' | b'-');
        c += 1;
    }
    t
};

/// Whether every byte of `b` is in `set`, tested eight at a time (this
/// runs on every key and value a build writes: a fifth of the work of the
/// Kubernetes target).
fn all_in(b: &[u8], set: &[bool; 256]) -> bool {
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        if !c.iter().fold(true, |ok, &x| ok & set[usize::from(x)]) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| set[usize::from(x)])
}

/// Can `s` be written without quotes and read back unchanged everywhere?
fn plain_ok(s: &str) -> bool {
    // Every character allowed is ASCII: bytes say it all.
    let b = s.as_bytes();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'_' || first == b'/')
        && all_in(b, &PLAIN)
        // The special words are at most five characters long, and start
        // with one of these letters (`~` is not plain anyway).
        && (b.len() > 5
            || !matches!(first, b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O')
            || !SPECIAL.contains(&s))
        && last != b'.'
}

// The tree-walking printer this module used to be: the reference the
// serializer is tested against.
#[cfg(test)]
fn string(s: &str) -> String {
    if plain_ok(s) {
        s.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar, once the
        // characters YAML does not allow (DEL, C1 controls, U+FFFE/F) or
        // reads as line breaks (NEL, U+2028/9, folded by YAML 1.1
        // readers) are escaped too.
        let json = serde_json::to_string(s).expect("strings serialize");
        if !json.chars().any(yaml_escape) {
            return json;
        }
        let mut out = String::with_capacity(json.len() + 16);
        for c in json.chars() {
            if yaml_escape(c) {
                out.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Characters a double-quoted YAML scalar must carry as escapes.
fn yaml_escape(c: char) -> bool {
    matches!(
        c,
        '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
    )
}

#[cfg(test)]
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        _ => unreachable!("collections are not scalars"),
    }
}

#[cfg(test)]
fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push(' ');
    }
}

#[cfg(test)]
fn map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a map inside a sequence follows the `- `.
        if i > 0 || !out.ends_with("- ") {
            pad(out, indent);
        }
        out.push_str(&string(k));
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                map(out, inner, indent + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                seq(out, items, indent);
            }
            _ => {
                out.push(' ');
                out.push_str(&scalar(v));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
fn seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        pad(out, indent);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => map(out, m, indent + 2),
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                seq(out, a, indent + 2);
            }
            _ => {
                out.push_str(&scalar(item));
                out.push('\n');
            }
        }
    }
}

/// Bytes that end a run of characters copied as they are inside a
/// double-quoted scalar: controls, `"`, `\\`, DEL, and the lead bytes of
/// the multi-byte characters [`yaml_escape`] names (U+0080-U+009F start
/// with 0xC2, U+2028/9 with 0xE2, U+FFFE/F with 0xEF).
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = c < 0x20 || c == b'"' as usize || c == b'\\' as usize || c == 0x7f;
        c += 1;
    }
    t[0xc2] = true;
    t[0xe2] = true;
    t[0xef] = true;
    t
};

/// Whether one of the eight bytes of `w` may be in [`STOP`]: one below
/// 0x20, `"`, `\\`, DEL, or any byte from 0x80 on (the table decides
/// those). Never false for a word holding a byte of STOP.
#[inline]
fn may_stop(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Sets a byte's high bit for each byte of `v` that is zero (exact as
    // to whether there is one).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let del = zero(w ^ (ONES * 0x7f));
    (below_space | quote | backslash | del | (w & HIGH)) != 0
}

/// Write `s` as a YAML scalar: plain when [`plain_ok`], else the
/// double-quoted form of [`string`] (a JSON string, with the characters
/// YAML does not allow escaped too), without building it first.
#[inline]
fn write_str(out: &mut String, s: &str) {
    if plain_ok(s) {
        out.push_str(s);
    } else {
        write_quoted(out, s);
    }
}

/// Write a struct's field name, a `&'static str` the same program writes
/// over and over: whether it is plain is remembered, by address and
/// length, in a small table shared by all threads.
#[inline]
fn write_field_name(out: &mut String, key: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    const SLOTS: usize = 256;
    // Each slot holds one plain name, as its address with its length in
    // the top 16 bits: one word, so threads never see half of an entry.
    static SEEN: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
    let at = key.as_ptr() as u64;
    let word = (at < 1 << 48 && key.len() < 1 << 16 && !key.is_empty())
        .then_some(at | (key.len() as u64) << 48);
    // Names are laid out at least a byte apart: the low bits vary most.
    let slot = &SEEN[((at ^ (at >> 8)) % SLOTS as u64) as usize];
    let plain = match word {
        Some(w) if slot.load(Relaxed) == w => true,
        _ => {
            let ok = plain_ok(key);
            if let (true, Some(w)) = (ok, word) {
                slot.store(w, Relaxed);
            }
            ok
        }
    };
    if plain {
        out.push_str(key);
    } else {
        write_quoted(out, key);
    }
}

/// The double-quoted form of [`write_str`].
#[cold]
#[inline(never)]
fn write_quoted(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Runs of ordinary bytes (most of any text) are skipped eight at a
        // time, then one at a time.
        if let Some(word) = bytes.get(i..i + 8)
            && !may_stop(u64::from_le_bytes(word.try_into().expect("eight bytes")))
        {
            i += 8;
            continue;
        }
        if !STOP[usize::from(bytes[i])] {
            i += 1;
            continue;
        }
        // A byte in STOP starts a character (never a continuation byte).
        let c = s[i..].chars().next().expect("at a character boundary");
        let len = c.len_utf8();
        let esc: &str = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 || yaml_escape(c) => "",
            _ => {
                i += len;
                continue;
            }
        };
        out.push_str(&s[start..i]);
        i += len;
        start = i;
        if esc.is_empty() {
            let n = c as u32;
            out.push_str("\\u");
            for shift in [12, 8, 4, 0] {
                out.push(HEX[((n >> shift) & 0xf) as usize] as char);
            }
        } else {
            out.push_str(esc);
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn indent(out: &mut String, n: usize) {
    const SPACES: &str = "                                                                ";
    let mut n = n;
    while n > SPACES.len() {
        out.push_str(SPACES);
        n -= SPACES.len();
    }
    out.push_str(&SPACES[..n]);
}

/// Where the value being serialized goes.
#[derive(Clone, Copy)]
enum Place {
    /// A whole document.
    Top,
    /// After `key:` of a map entry whose key is at this indent.
    MapValue(usize),
    /// After the `- ` of a sequence item whose dash is at this indent.
    SeqItem(usize),
}

impl Place {
    /// Put a scalar here.
    fn scalar(self, out: &mut String, text: &str) {
        if let Place::MapValue(_) = self {
            out.push(' ');
        }
        out.push_str(text);
        out.push('\n');
    }

    fn scalar_str(self, out: &mut String, s: &str) {
        if let Place::MapValue(_) = self {
            out.push(' ');
        }
        write_str(out, s);
        out.push('\n');
    }

    /// Indent of the entries of a (non-empty) map placed here; opens it.
    fn open_map(self, out: &mut String) -> usize {
        match self {
            Place::Top => 0,
            Place::MapValue(k) => {
                out.push('\n');
                k + 2
            }
            Place::SeqItem(d) => d + 2,
        }
    }

    /// Indent of the dashes of a (non-empty) sequence placed here; opens it.
    fn open_seq(self, out: &mut String) -> usize {
        match self {
            Place::Top => 0,
            Place::MapValue(k) => {
                out.push('\n');
                k
            }
            Place::SeqItem(d) => {
                out.push('\n');
                d + 2
            }
        }
    }
}

#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl serde::ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// The YAML printer as a serde serializer: one value at one [`Place`].
struct Ser<'o> {
    out: &'o mut String,
    place: Place,
}

/// A map (or struct) being written; entries are written as they come,
/// `{}` at the end if there were none.
struct MapSer<'o> {
    out: &'o mut String,
    place: Place,
    /// Indent of the entries, once the map is open.
    indent: Option<usize>,
}

impl MapSer<'_> {
    /// Write the key of the next entry; `key` writes it (without the colon).
    fn key(&mut self, key: impl FnOnce(&mut String) -> Result<(), Error>) -> Result<(), Error> {
        match self.indent {
            None => {
                let i = self.place.open_map(self.out);
                self.indent = Some(i);
                // The first key of a map inside a sequence follows the `- `.
                if !matches!(self.place, Place::SeqItem(_)) {
                    indent(self.out, i);
                }
            }
            Some(i) => indent(self.out, i),
        }
        key(self.out)?;
        self.out.push(':');
        Ok(())
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let i = self.indent.expect("a key came first");
        value.serialize(Ser {
            out: self.out,
            place: Place::MapValue(i),
        })
    }

    fn end(self) -> Result<(), Error> {
        if self.indent.is_none() {
            self.place.scalar(self.out, "{}");
        }
        Ok(())
    }
}

/// A sequence being written, `[]` at the end if it had no items.
struct SeqSer<'o> {
    out: &'o mut String,
    place: Place,
    indent: Option<usize>,
}

impl SeqSer<'_> {
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let i = match self.indent {
            Some(i) => i,
            None => {
                let i = self.place.open_seq(self.out);
                self.indent = Some(i);
                i
            }
        };
        indent(self.out, i);
        self.out.push_str("- ");
        value.serialize(Ser {
            out: self.out,
            place: Place::SeqItem(i),
        })
    }

    fn end(self) -> Result<(), Error> {
        if self.indent.is_none() {
            self.place.scalar(self.out, "[]");
        }
        Ok(())
    }
}

impl<'o> Ser<'o> {
    /// A one-entry map `variant: ...` (serde_json's form of enum variants
    /// with data); returns the place of its value.
    fn variant(self, variant: &str) -> (&'o mut String, Place) {
        let mut m = MapSer {
            out: self.out,
            place: self.place,
            indent: None,
        };
        m.key(|out| {
            write_str(out, variant);
            Ok(())
        })
        .expect("writing a key cannot fail");
        let i = m.indent.expect("opened");
        (m.out, Place::MapValue(i))
    }
}

macro_rules! int {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<(), Error> {
            self.place.scalar(self.out, itoa::Buffer::new().format(v));
            Ok(())
        }
    )*};
}

impl<'o> serde::Serializer for Ser<'o> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = SeqSer<'o>;
    type SerializeTuple = SeqSer<'o>;
    type SerializeTupleStruct = SeqSer<'o>;
    type SerializeTupleVariant = SeqSer<'o>;
    type SerializeMap = MapSer<'o>;
    type SerializeStruct = MapSer<'o>;
    type SerializeStructVariant = MapSer<'o>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.place
            .scalar(self.out, if v { "true" } else { "false" });
        Ok(())
    }

    int!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        // As serde_json prints its numbers; not finite is null.
        match serde_json::Number::from_f64(v) {
            Some(n) => self.place.scalar(self.out, &n.to_string()),
            None => self.place.scalar(self.out, "null"),
        }
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.place.scalar_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.place.scalar_str(self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        use serde::ser::SerializeSeq;
        let mut s = self.serialize_seq(Some(v.len()))?;
        for b in v {
            s.serialize_element(b)?;
        }
        s.end()
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.place.scalar(self.out, "null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        let (out, place) = self.variant(variant);
        value.serialize(Ser { out, place })
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<SeqSer<'o>, Error> {
        Ok(SeqSer {
            out: self.out,
            place: self.place,
            indent: None,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'o>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer<'o>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<SeqSer<'o>, Error> {
        let (out, place) = self.variant(variant);
        Ok(SeqSer {
            out,
            place,
            indent: None,
        })
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapSer<'o>, Error> {
        Ok(MapSer {
            out: self.out,
            place: self.place,
            indent: None,
        })
    }

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<MapSer<'o>, Error> {
        self.serialize_map(None)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<MapSer<'o>, Error> {
        let (out, place) = self.variant(variant);
        Ok(MapSer {
            out,
            place,
            indent: None,
        })
    }
}

impl serde::ser::SerializeSeq for SeqSer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<(), Error> {
        SeqSer::end(self)
    }
}

impl serde::ser::SerializeTuple for SeqSer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<(), Error> {
        SeqSer::end(self)
    }
}

impl serde::ser::SerializeTupleStruct for SeqSer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<(), Error> {
        SeqSer::end(self)
    }
}

impl serde::ser::SerializeTupleVariant for SeqSer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.item(value)
    }
    fn end(self) -> Result<(), Error> {
        SeqSer::end(self)
    }
}

impl serde::ser::SerializeMap for MapSer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.key(|out| key.serialize(KeySer { out }))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.value(value)
    }
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        key: &K,
        value: &V,
    ) -> Result<(), Error> {
        self.key(|out| key.serialize(KeySer { out }))?;
        self.value(value)
    }
    fn end(self) -> Result<(), Error> {
        MapSer::end(self)
    }
}

impl serde::ser::SerializeStruct for MapSer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.key(|out| {
            write_field_name(out, key);
            Ok(())
        })?;
        self.value(value)
    }
    fn end(self) -> Result<(), Error> {
        MapSer::end(self)
    }
}

impl serde::ser::SerializeStructVariant for MapSer<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        serde::ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), Error> {
        MapSer::end(self)
    }
}

/// Map keys: strings written directly; anything else as serde_json turns
/// it into an object key.
struct KeySer<'o> {
    out: &'o mut String,
}

impl KeySer<'_> {
    fn via_json<T: Serialize + ?Sized>(self, key: &T) -> Result<(), Error> {
        let k = serde_json::to_value(KeyOf(key)).map_err(|e| Error(e.to_string()))?;
        let Value::Object(m) = k else {
            unreachable!("a one-entry map")
        };
        let (k, _) = m.into_iter().next().expect("one entry");
        write_str(self.out, &k);
        Ok(())
    }
}

/// `{key: null}`, to let serde_json convert a key.
struct KeyOf<'k, T: ?Sized>(&'k T);

impl<T: Serialize + ?Sized> Serialize for KeyOf<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(self.0, &())?;
        m.end()
    }
}

macro_rules! key_via_json {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<(), Error> {
            self.via_json(&v)
        }
    )*};
}

impl serde::Serializer for KeySer<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = serde::ser::Impossible<(), Error>;
    type SerializeTuple = serde::ser::Impossible<(), Error>;
    type SerializeTupleStruct = serde::ser::Impossible<(), Error>;
    type SerializeTupleVariant = serde::ser::Impossible<(), Error>;
    type SerializeMap = serde::ser::Impossible<(), Error>;
    type SerializeStruct = serde::ser::Impossible<(), Error>;
    type SerializeStructVariant = serde::ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.out, v);
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    key_via_json!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16,
        serialize_i32: i32, serialize_i64: i64, serialize_i128: i128, serialize_u8: u8,
        serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128,
        serialize_f32: f32, serialize_f64: f64, serialize_char: char);

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_none(self) -> Result<(), Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(Error("map keys must be strings".into()))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(Error("map keys must be strings".into()))
    }
}

// The tree-walking printer's entry point (reference for the tests).
#[cfg(test)]
fn reference_to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Field names are remembered as plain only when they are: names that
    /// must be quoted stay quoted however often they are written, beside
    /// plain ones, on every thread.
    #[test]
    fn field_names_quoted_every_time_they_need_it() {
        #[derive(Serialize)]
        struct Odd {
            #[serde(rename = "yes")]
            a: u8,
            plain: u8,
            #[serde(rename = "on")]
            b: u8,
            #[serde(rename = "a b")]
            c: u8,
            #[serde(rename = "")]
            d: u8,
        }
        let want = "\"yes\": 1\nplain: 2\n\"on\": 3\n\"a b\": 4\n\"\": 5\n";
        let odd = Odd {
            a: 1,
            plain: 2,
            b: 3,
            c: 4,
            d: 5,
        };
        for _ in 0..3 {
            assert_eq!(to_string(&odd), want);
        }
        let other = std::thread::spawn(move || to_string(&odd));
        assert_eq!(other.join().expect("no panic"), want);
    }

    #[test]
    fn specials_are_quoted() {
        let v = json!({"command": ["redis-server", "--appendonly", "yes"], "ports": ["8080:80"], "a": "~", "b": "0o17", "c": "1e3", "d": "on"});
        let y = to_string(&v);
        assert!(y.contains("- \"yes\""), "{y}");
        assert!(y.contains("- \"8080:80\""), "{y}");
        assert!(y.contains("a: \"~\""), "{y}");
        let back: serde_json::Value = from_str(&y).expect("parses");
        assert_eq!(back, v);
    }

    #[test]
    fn the_word_check_never_misses_a_stop_byte() {
        // Every byte value at every position of an otherwise plain word.
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut w = *b"abcdefgh";
                w[pos] = b;
                let stop = w.iter().any(|&x| STOP[usize::from(x)]);
                if stop {
                    assert!(may_stop(u64::from_le_bytes(w)), "{b:#x} at {pos}");
                }
                if !stop && b < 0x80 {
                    assert!(!may_stop(u64::from_le_bytes(w)), "{b:#x} at {pos}");
                }
            }
        }
    }

    #[test]
    fn every_special_word_is_quoted_and_reads_back_as_a_string() {
        for w in SPECIAL {
            assert!(!plain_ok(w), "{w}");
            let v = json!({ *w: w });
            let y = to_string(&v);
            assert_eq!(y, format!("\"{w}\": \"{w}\"\n"));
            let back: serde_json::Value = from_str(&y).expect("parses");
            assert_eq!(back, v);
        }
        for w in ["yess", "online", "nul", "Tru", "of", "offset"] {
            assert!(plain_ok(w), "{w}");
        }
    }

    #[test]
    fn line_separators_and_non_printables_are_escaped() {
        let v =
            json!({"a": "x\u{85}y\u{2028}z \u{2029}", "b": "\u{7f}\u{9f}\u{fffe}\u{ffff}\u{fffd}"});
        let y = to_string(&v);
        assert!(y.contains(r"x\u0085y\u2028z \u2029"), "{y}");
        assert!(y.contains(r"\u007f\u009f\ufffe\uffff"), "{y}");
        let back: serde_json::Value = from_str(&y).expect("parses");
        assert_eq!(back, v);
    }

    #[test]
    fn nesting_round_trips() {
        let v = json!({
            "services": {"web": {"image": "nginx:1.27", "environment": {"A": "x: y", "B": "line\nbreak"}, "ports": []}},
            "list": [{"name": "a", "items": [1, 2, {"x": null}]}, [true, false], "s"],
            "empty": {},
        });
        let y = to_string(&v);
        let back: serde_json::Value = from_str(&y).expect("parses");
        assert_eq!(back, v, "{y}");
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            prop::sample::select(vec![
                "yes",
                "on",
                "~",
                "8080:80",
                "1e3",
                "a.",
                "_x/y@z+1-2",
                "- a",
                ""
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-z~]{0,3}|\\PC{0,4}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn serializer_prints_as_the_tree_printer(v in value()) {
            proptest::prop_assert_eq!(to_string(&v), reference_to_string(&v));
        }
    }

    #[test]
    fn every_char_quotes_as_before() {
        for c in (0..0x11_0000).filter_map(char::from_u32) {
            let s = format!("a{c}b{c}");
            let mut out = String::new();
            write_str(&mut out, &s);
            assert_eq!(out, string(&s), "{:x}", c as u32);
        }
    }

    proptest::proptest! {
        #[test]
        fn parts_print_as_the_whole(items in proptest::collection::vec(value(), 1..4)) {
            // `a:` / `  b:` / `  - item` and `  c:` / `    k0: item` by hand.
            let mut out = String::from("a:\n  b:\n");
            for v in &items {
                write_item(&mut out, 2, v);
            }
            out.push_str("  c:\n");
            for (i, v) in items.iter().enumerate() {
                write_entry(&mut out, 4, &format!("k{i}"), v);
            }
            let m: serde_json::Map<String, Value> =
                items.iter().enumerate().map(|(i, v)| (format!("k{i}"), v.clone())).collect();
            let whole = json!({"a": {"b": items, "c": m}});
            proptest::prop_assert_eq!(out, to_string(&whole));
        }
    }

    #[test]
    fn typed_values_print_as_their_json_values() {
        #[derive(serde::Serialize)]
        enum E {
            Unit,
            New(u8),
            Tup(u8, String),
            Rec { a: Option<u8>, b: Vec<u8> },
        }
        #[derive(serde::Serialize)]
        struct S {
            e: Vec<E>,
            m: std::collections::BTreeMap<u32, f32>,
            t: (char, ()),
            empty: Vec<u8>,
            nan: f64,
        }
        let v = S {
            e: vec![
                E::Unit,
                E::New(1),
                E::Tup(2, "on".into()),
                E::Rec { a: None, b: vec![] },
            ],
            m: [(1, 0.1), (2, 1e30)].into_iter().collect(),
            t: ('y', ()),
            empty: vec![],
            nan: f64::NAN,
        };
        let j = serde_json::to_value(&v).expect("value");
        assert_eq!(to_string(&v), reference_to_string(&j));
        let docs = [json!({"a": 1}), json!([]), json!("x")];
        assert_eq!(to_multi_doc(&docs), "a: 1\n---\n[]\n---\nx\n");
    }
}
