//! Request bodies read the way the original Sky Island read them, with Go's
//! `encoding/json`: field names match case-insensitively (`"URL"`, `"Call"`); unknown
//! fields are ignored (logged once per name, at debug level); `null` leaves a field as it
//! was (absent, unless an earlier key set it); of several keys naming one field, the last
//! wins. What Go refused stays refused: a body that is not a JSON object, and a field of
//! the wrong type.

use std::collections::HashSet;
use std::sync::Mutex;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::ApiError;

/// A JSON object body, its keys in the order sent, with the keys asked for so far.
#[derive(Debug)]
pub struct Body {
    fields: Vec<(String, Value)>,
    used: HashSet<String>,
}

/// An object's members in document order, duplicates kept (`serde_json::Map` keeps one of
/// each, and not in order without a crate-wide feature).
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Members, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_any(MembersVisitor)
    }
}

/// Field names already reported as unknown (each is logged once per process).
static REPORTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

impl Body {
    pub fn parse(bytes: &[u8]) -> Result<Body, ApiError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::bad_request(format!(
                "invalid request body: expected a JSON object, not {}",
                kind(&value)
            )));
        }
        // Valid JSON and an object: read again, keeping every member in order.
        let Members(fields) =
            serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
        Ok(Body { fields, used: HashSet::new() })
    }

    /// The value of field `name`: the last non-null member whose key is `name` in any
    /// case; `None` when there is none.
    fn get(&mut self, name: &str) -> Option<&Value> {
        let mut found = None;
        for (key, value) in &self.fields {
            if key.eq_ignore_ascii_case(name) {
                self.used.insert(key.clone());
                if !value.is_null() {
                    found = Some(value);
                }
            }
        }
        found
    }

    pub fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(wrong(name, "a string", other)),
        }
    }

    pub fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        self.string(name)?.ok_or_else(|| ApiError::bad_request(format!("invalid request body: missing field `{name}`")))
    }

    pub fn bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong(name, "a boolean", other)),
        }
    }

    /// A field that may be a string or a number (the original's numeric states).
    pub fn value(&mut self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }

    /// Logs (once per name) the fields nobody asked for.
    pub fn finish(self) {
        let unknown: Vec<&String> = self.fields.iter().map(|(k, _)| k).filter(|k| !self.used.contains(*k)).collect();
        if unknown.is_empty() {
            return;
        }
        let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
        let reported = reported.get_or_insert_with(HashSet::new);
        for name in unknown {
            // Bounded: a client inventing names does not grow this without end.
            if reported.len() < 1024 && reported.insert(name.clone()) {
                tracing::debug!(field = %name, "ignoring an unknown request field");
            }
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(name: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::bad_request(format!("invalid request body: field `{name}` must be {expected}, not {}", kind(got)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_go_reads_them() {
        let mut body = Body::parse(br#"{"url": "a", "Call": "F()", "URL": "b", "IP4": null, "extra": 1}"#).unwrap();
        assert_eq!(body.required_string("url").unwrap(), "b", "the last key wins, whatever its case");
        assert_eq!(body.required_string("call").unwrap(), "F()");
        assert_eq!(body.bool("ip4").unwrap(), None, "null is absent");
        assert_eq!(body.string("version").unwrap(), None);
        body.finish();
        let mut body = Body::parse(br#"{"ip4": true, "Ip4": null}"#).unwrap();
        assert_eq!(body.bool("ip4").unwrap(), Some(true), "null leaves the field as it was");
        let mut body = Body::parse(br#"{"ip4": "yes"}"#).unwrap();
        assert!(body.bool("ip4").unwrap_err().message.contains("must be a boolean, not a string"));
        assert!(body.required_string("url").unwrap_err().message.contains("missing field `url`"));
        for bad in [&b"[]"[..], b"\"x\"", b"{", b"", b"null"] {
            assert!(Body::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
