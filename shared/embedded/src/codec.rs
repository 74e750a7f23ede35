//! How the embedded store keeps an item's attributes in its `attrs` column:
//! a compact binary form (a BLOB), decoded without parsing text. Items
//! written before it are JSON text, and are still read as such; each is
//! written back in the binary form the next time it is written.
//!
//! The form, after a leading [`VERSION`] byte: a count of attributes, then
//! each attribute's name and value. Counts and lengths are LEB128 varints;
//! names and strings are UTF-8 bytes; a value is a tag byte and its body (a
//! number as `rust_decimal`'s exact 16-byte form, never a float).

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use lambent_ports::store::Value;

/// The first byte of the binary form. JSON text starts with `{`.
const VERSION: u8 = 1;

const S: u8 = 0;
const N: u8 = 1;
const BOOL: u8 = 2;
const B: u8 = 3;
const L: u8 = 4;
const M: u8 = 5;
const NULL: u8 = 6;

/// Deeper nesting than DynamoDB's 32 levels is refused, so a corrupt value
/// cannot recurse without bound.
const MAX_DEPTH: usize = 32;

pub fn encode(attrs: &BTreeMap<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    map(&mut out, attrs);
    out
}

/// The attributes of a stored `attrs` column: the binary form, or JSON text
/// written before it.
pub fn decode(stored: &[u8]) -> Result<BTreeMap<String, Value>, String> {
    match stored.split_first() {
        Some((&VERSION, body)) => {
            let mut reader = Reader { rest: body };
            let attrs = reader.map(0)?;
            match reader.rest.is_empty() {
                true => Ok(attrs),
                false => Err("bytes after the attributes".into()),
            }
        }
        _ => serde_json::from_slice(stored).map_err(|e| e.to_string()),
    }
}

fn varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len());
    out.extend_from_slice(b);
}

fn map(out: &mut Vec<u8>, m: &BTreeMap<String, Value>) {
    varint(out, m.len());
    for (name, v) in m {
        bytes(out, name.as_bytes());
        value(out, v);
    }
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::S(s) => {
            out.push(S);
            bytes(out, s.as_bytes());
        }
        Value::N(n) => {
            out.push(N);
            out.extend_from_slice(&n.serialize());
        }
        Value::Bool(b) => {
            out.push(BOOL);
            out.push(u8::from(*b));
        }
        Value::B(b) => {
            out.push(B);
            bytes(out, b);
        }
        Value::L(items) => {
            out.push(L);
            varint(out, items.len());
            for item in items {
                value(out, item);
            }
        }
        Value::M(m) => {
            out.push(M);
            map(out, m);
        }
        Value::Null => out.push(NULL),
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err("truncated".into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<usize, String> {
        let mut n: usize = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("varint too long".into())
    }

    fn text(&mut self) -> Result<String, String> {
        let n = self.varint()?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    fn map(&mut self, depth: usize) -> Result<BTreeMap<String, Value>, String> {
        let n = self.varint()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let name = self.text()?;
            let v = self.value(depth)?;
            m.insert(name, v);
        }
        Ok(m)
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deep".into());
        }
        Ok(match self.byte()? {
            S => Value::S(self.text()?),
            N => {
                let raw: [u8; 16] = self
                    .take(16)?
                    .try_into()
                    .map_err(|_| "a number is not 16 bytes".to_string())?;
                Value::N(Decimal::deserialize(raw))
            }
            BOOL => Value::Bool(self.byte()? != 0),
            B => {
                let n = self.varint()?;
                Value::B(self.take(n)?.to_vec())
            }
            L => {
                let n = self.varint()?;
                let mut items = Vec::with_capacity(n.min(self.rest.len()));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::L(items)
            }
            M => Value::M(self.map(depth + 1)?),
            NULL => Value::Null,
            tag => return Err(format!("unknown value tag {tag}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn every_kind() -> BTreeMap<String, Value> {
        let mut inner = BTreeMap::new();
        inner.insert(
            "deep".to_owned(),
            Value::L(vec![Value::Null, Value::Bool(false)]),
        );
        let mut attrs = BTreeMap::new();
        attrs.insert("s".to_owned(), Value::S("héllo \"quoted\" {json}".into()));
        attrs.insert("empty".to_owned(), Value::S(String::new()));
        attrs.insert(
            "n".to_owned(),
            Value::N(Decimal::from_str("0.0000003").unwrap()),
        );
        attrs.insert(
            "big".to_owned(),
            Value::N(Decimal::from_str("-79228162514264337593543950335").unwrap()),
        );
        attrs.insert("t".to_owned(), Value::Bool(true));
        attrs.insert("b".to_owned(), Value::B((0..=255).collect()));
        attrs.insert("long".to_owned(), Value::S("x".repeat(100_000)));
        attrs.insert("m".to_owned(), Value::M(inner));
        attrs.insert("nothing".to_owned(), Value::Null);
        attrs
    }

    #[test]
    fn every_kind_of_value_comes_back_exactly() {
        let attrs = every_kind();
        let stored = encode(&attrs);
        assert_eq!(stored[0], VERSION);
        assert_eq!(decode(&stored).unwrap(), attrs);
        // A number keeps its scale, as the JSON form did.
        let n = &decode(&stored).unwrap()["n"];
        assert_eq!(n, &Value::N(Decimal::from_str("0.0000003").unwrap()));
    }

    #[test]
    fn json_written_before_is_still_read() {
        let attrs = every_kind();
        let json = serde_json::to_vec(&attrs).unwrap();
        assert_eq!(json[0], b'{');
        assert_eq!(decode(&json).unwrap(), attrs);
    }

    #[test]
    fn a_damaged_value_is_an_error_not_a_panic() {
        let stored = encode(&every_kind());
        for cut in 1..stored.len().min(400) {
            assert!(decode(&stored[..cut]).is_err(), "cut at {cut}");
        }
        let mut unknown = stored.clone();
        // The first value's tag, after the version, the count and the
        // first name ("b": a length byte and one byte).
        unknown[4] = 99;
        assert!(decode(&unknown).is_err());
        let mut trailing = stored;
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        // Nesting past DynamoDB's depth.
        let mut deep = Value::Null;
        for _ in 0..40 {
            deep = Value::L(vec![deep]);
        }
        let mut attrs = BTreeMap::new();
        attrs.insert("deep".to_owned(), deep);
        assert!(decode(&encode(&attrs)).is_err());
    }
}
