//! Reading scenario text: one size limit for YAML and JSON, duplicate keys refused in both, and
//! errors that name the field's path.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::LoadError;

/// Largest scenario text accepted, bytes, whether YAML or JSON (the HTTP API's body limit,
/// `--max-body-bytes`, is usually lower).
pub const MAX_SCENARIO_BYTES: usize = 64 * 1024 * 1024;

/// Deepest nesting of mappings and lists read (a scenario needs 5). Deeper documents are refused
/// before they are read: each level is a stack frame, and a few hundred overflowed the 2 MiB
/// stack of a test or tokio thread in a debug build.
const MAX_NESTING: usize = 32;

/// Headroom of the YAML budget over what the text's length implies (small documents with a few
/// anchors).
const YAML_BUDGET_FLOOR: usize = 100_000;

pub(super) fn check_size(text: &str) -> Result<(), LoadError> {
    if text.len() > MAX_SCENARIO_BYTES {
        return Err(LoadError::Parse {
            path: "(document)".into(),
            message: format!("{} bytes is more than the {MAX_SCENARIO_BYTES} bytes a scenario may have", text.len()),
        });
    }
    if text.trim().is_empty() {
        return Err(LoadError::Parse {
            path: "(document)".into(),
            message: "empty document: expected a scenario (YAML or JSON)".into(),
        });
    }
    Ok(())
}

/// A JSON text as a value, refusing duplicate keys (serde_json lets the last one win).
pub(super) fn json_value(text: &str) -> Result<Value, LoadError> {
    let error_at = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = Node { path: &Path::Root, depth: 0, error_at: &error_at }.deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    parsed.map_err(|e| match error_at.into_inner() {
        Some(path) => LoadError::Parse { path, message: e.to_string() },
        None => LoadError::Parse { path: format!("line {} column {}", e.line(), e.column()), message: e.to_string() },
    })
}

/// Deserialize a value into `T`, naming the offending field's path.
pub(super) fn from_json_value<T: DeserializeOwned>(value: Value) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        LoadError::Parse { path: document_if_root(path), message: e.into_inner().to_string() }
    })
}

/// A YAML text as a value, read as JSON is: YAML 1.2 core types, duplicate keys refused.
pub(super) fn yaml_value(text: &str) -> Result<Value, LoadError> {
    let error_at = RefCell::new(None);
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(text.len()), |de| {
        Node { path: &Path::Root, depth: 0, error_at: &error_at }.deserialize(de)
    });
    result.map_err(|e| LoadError::Parse {
        path: error_at.into_inner().unwrap_or_else(|| "(yaml)".into()),
        message: e.to_string(),
    })
}

/// serde-saphyr's budget scaled to the text, so that the byte limit bounds YAML as it bounds
/// JSON: its fixed default (250,000 nodes) refused YAML scenarios above ~14,500 variants that
/// the same JSON passed. Alias expansion (billion laughs) stays bounded by the replay limits,
/// which do not grow with the text.
fn yaml_options(text_len: usize) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    let mut budget = serde_saphyr::Budget::default();
    // A node or an event takes at least one byte of text.
    budget.max_nodes = budget.max_nodes.max(text_len + YAML_BUDGET_FLOOR);
    budget.max_events = budget.max_events.max(2 * text_len + YAML_BUDGET_FLOOR);
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(text_len + YAML_BUDGET_FLOOR);
    // Past the nesting the reader takes (MAX_NESTING), before anything is built.
    budget.max_depth = 128;
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // YAML 1.2's core schema, as JSON Schema (and the OpenAPI document) reads YAML: an unquoted
    // `0` or `true` is a number or a boolean, not a name; `Y`, `no` and `on` are strings.
    options.no_schema = true;
    options.strict_booleans = true;
    options
}

fn document_if_root(path: String) -> String {
    if path == "." { "(document)".into() } else { path }
}

/// Text from input made safe for a terminal: control characters other than newline and tab are
/// written as escapes, so a name or an error snippet cannot move the cursor or change colours.
pub fn for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a JSON node sits, for the duplicate-key and nesting messages.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("(document)"),
            Path::Key(Path::Root, k) => write!(f, "{k}"),
            Path::Key(parent, k) => write!(f, "{parent}.{k}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Builds a [`Value`] like serde_json does, but fails on a repeated key or too deep a nesting,
/// recording where.
struct Node<'a> {
    path: &'a Path<'a>,
    /// Mappings and lists around this node.
    depth: usize,
    error_at: &'a RefCell<Option<String>>,
}

impl<'a> Node<'a> {
    fn child<'b>(&self, path: &'b Path<'b>) -> Node<'b>
    where
        'a: 'b,
    {
        Node { path, depth: self.depth + 1, error_at: self.error_at }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= MAX_NESTING {
            self.error_at.replace(Some(self.path.to_string()));
            return Err(E::custom(format!("nested deeper than {MAX_NESTING} levels")));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // A whole number written as `8.0` is an integer, as JSON Schema counts it (and the
        // OpenAPI document promises): exact up to 2^53.
        if v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0 {
            return Ok(Value::from(v as i64));
        }
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{}: {v} is not a finite number", self.path)))
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
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        loop {
            let path = Path::Index(self.path, out.len());
            match seq.next_element_seed(self.child(&path))? {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = Path::Key(self.path, &key);
            if out.contains_key(&key) {
                let at = path.to_string();
                let message = format!("duplicate key {key:?} (a key may appear once in a mapping)");
                self.error_at.replace(Some(at));
                return Err(de::Error::custom(message));
            }
            let value = map.next_value_seed(self.child(&path))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(r: Result<Value, LoadError>) -> (String, String) {
        match r {
            Err(LoadError::Parse { path, message }) => (path, message),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn a_duplicate_json_key_is_refused_at_its_path() {
        let (path, message) = parse_error(json_value(r#"{"a": [{"b": 1, "b": 2}]}"#));
        assert_eq!(path, "a[0].b");
        assert!(message.contains("duplicate key \"b\"") && message.contains("line 1"), "{message}");
        let (path, _) = parse_error(json_value(r#"{"x": 1, "x": 1}"#));
        assert_eq!(path, "x");
    }

    #[test]
    fn json_values_are_read_as_serde_json_reads_them() {
        let text = r#"{"a": [1, -2, 2.5, "s", true, null, {"c": {}}], "big": 18446744073709551615}"#;
        assert_eq!(json_value(text).expect("valid"), serde_json::from_str::<Value>(text).expect("valid"));
        let (path, message) = parse_error(json_value("{\"a\": 1} trailing"));
        assert!(path.starts_with("line 1"), "{path}: {message}");
    }

    #[test]
    fn terminal_text_escapes_control_characters_but_keeps_lines() {
        assert_eq!(for_terminal("a\u{1b}[31mb\nc\td\r"), "a\\u{1b}[31mb\nc\td\\r");
    }

    #[test]
    fn the_yaml_budget_grows_with_the_text_but_not_for_aliases() {
        // 40,000 entries of 5 nodes each is above serde-saphyr's default of 250,000 nodes.
        let mut big = String::from("items:\n");
        for i in 0..40_000 {
            big.push_str(&format!("  - {{ name: n{i}, v: {i} }}\n"));
        }
        let v = yaml_value(&big).expect("within the byte limit");
        assert_eq!(v["items"].as_array().map(Vec::len), Some(40_000));

        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in
            ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            laughs.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = yaml_value(&laughs).expect_err("a billion laughs");
        assert!(matches!(e, LoadError::Parse { .. }));
    }
}
