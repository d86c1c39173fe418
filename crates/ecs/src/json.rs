//! A JSON value that keeps the key order of the document it was read from.
//!
//! The injector rewrites task definitions that people keep in version control
//! and review as diffs, so untouched parts must come out in the order they went
//! in. `serde_json::Value` sorts object keys unless serde_json's
//! `preserve_order` feature is on, and that feature is global to a build: it
//! would change how every other crate linked into the sidecar prints JSON.
//! This small value type keeps the order locally instead, and still uses
//! serde_json's parser and printer.
//!
//! Objects are short (tens of keys), so they are vectors searched linearly.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON value whose objects remember their key order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON object: keys in document order, each key at most once.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Object {
    entries: Vec<(String, Value)>,
}

impl Value {
    pub(crate) fn str(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    pub(crate) fn int(n: u64) -> Value {
        Value::Number(n.into())
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub(crate) fn as_object_mut(&mut self) -> Option<&mut Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn as_array_mut(&mut self) -> Option<&mut Vec<Value>> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// The JSON type name, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    /// Pretty-printed with two-space indentation and a trailing newline.
    pub(crate) fn to_pretty(&self) -> String {
        // Serialising this type cannot fail: keys are strings and numbers are
        // already valid JSON numbers.
        let mut out = serde_json::to_string_pretty(self).unwrap_or_default();
        out.push('\n');
        out
    }
}

impl Object {
    pub(crate) fn new() -> Self {
        Object::default()
    }

    /// Builds an object from pairs in the given order.
    pub(crate) fn from_pairs<const N: usize>(pairs: [(&str, Value); N]) -> Self {
        let mut object = Object::new();
        for (key, value) in pairs {
            object.insert(key, value);
        }
        object
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.entries
            .iter_mut()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Replaces the value in place if `key` exists, else appends it.
    pub(crate) fn insert(&mut self, key: &str, value: Value) {
        match self.get_mut(key) {
            Some(slot) => *slot = value,
            None => self.entries.push((key.to_owned(), value)),
        }
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<Value> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(index).1)
    }

    /// The value at `key`, inserting `default()` at the end first if absent.
    pub(crate) fn entry_or_insert_with(
        &mut self,
        key: &str,
        default: impl FnOnce() -> Value,
    ) -> &mut Value {
        let index = match self.entries.iter().position(|(k, _)| k == key) {
            Some(index) => index,
            None => {
                self.entries.push((key.to_owned(), default()));
                self.entries.len() - 1
            }
        };
        &mut self.entries[index].1
    }

    /// A string member, if present and a string.
    pub(crate) fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

impl From<Object> for Value {
    fn from(object: Object) -> Self {
        Value::Object(object)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Number(n) => n.serialize(serializer),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(object) => {
                let mut map = serializer.serialize_map(Some(object.entries.len()))?;
                for (key, value) in &object.entries {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // A repeated key keeps its first position and its last value, which is
        // what the AWS CLI's JSON reader (Python's) makes of such a document.
        let mut entries: Vec<(String, Value)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            match index.get(&key) {
                Some(&at) => entries[at].1 = value,
                None => {
                    index.insert(key.clone(), entries.len());
                    entries.push((key, value));
                }
            }
        }
        Ok(Value::Object(Object { entries }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(input: &str) -> String {
        serde_json::from_str::<Value>(input)
            .expect("valid JSON")
            .to_pretty()
    }

    #[test]
    fn keys_keep_document_order() {
        assert_eq!(
            roundtrip(r#"{"zeta": 1, "alpha": {"y": true, "b": null}}"#),
            "{\n  \"zeta\": 1,\n  \"alpha\": {\n    \"y\": true,\n    \"b\": null\n  }\n}\n"
        );
    }

    #[test]
    fn repeated_key_keeps_first_position_and_last_value() {
        assert_eq!(
            roundtrip(r#"{"a": 1, "b": 2, "a": 3}"#),
            "{\n  \"a\": 3,\n  \"b\": 2\n}\n"
        );
    }

    #[test]
    fn numbers_and_strings_survive_roundtrip() {
        assert_eq!(
            roundtrip(r#"[-5, 18446744073709551615, 0.25, "tab\tand \"quote\" é", []]"#),
            "[\n  -5,\n  18446744073709551615,\n  0.25,\n  \"tab\\tand \\\"quote\\\" é\",\n  []\n]\n"
        );
    }

    #[test]
    fn insert_replaces_in_place_and_appends_new_keys() {
        let mut object = Object::from_pairs([("a", Value::int(1)), ("b", Value::int(2))]);
        object.insert("a", Value::str("x"));
        object.insert("c", Value::Null);
        assert_eq!(
            Value::from(object).to_pretty(),
            "{\n  \"a\": \"x\",\n  \"b\": 2,\n  \"c\": null\n}\n"
        );
    }
}
