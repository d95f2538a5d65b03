//! Scenarios: Allot's offline input (YAML or JSON, or WVA's optimizer JSON), validated into the
//! [`Snapshot`] the core plans on.

pub mod bundled;
pub mod format;
pub mod profile;
pub mod snapshot;
pub mod validate;
pub mod wva;

mod text;

pub use format::Scenario;
pub use snapshot::Snapshot;
pub use text::{MAX_SCENARIO_BYTES, for_terminal};
pub use validate::{Invalid, MAX_LISTED_PROBLEMS, Problem, validate};

/// Why a scenario text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The text is not well-formed YAML/JSON, or a field has the wrong shape.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// The scenario is well-formed but its contents are wrong.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl LoadError {
    /// Each problem with the path it concerns.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            LoadError::Parse { path, message } => vec![Problem { path: path.clone(), message: message.clone() }],
            LoadError::Invalid(inv) => inv.problems.clone(),
        }
    }
}

/// Parse a scenario from YAML or JSON text. A document with a top-level `system` key is read as
/// WVA/llm-inferno optimizer JSON (rates in req/min) and converted.
///
/// Both syntaxes get the same treatment: at most [`MAX_SCENARIO_BYTES`], duplicate keys refused,
/// and a wrong field named by its path.
pub fn parse(text: &str) -> Result<Scenario, LoadError> {
    text::check_size(text)?;
    if text.trim_start().starts_with('{') {
        return from_value(text::json_value(text)?);
    }
    // YAML is read with YAML 1.2's core types, as JSON Schema reads it: `Y` and `no` are
    // strings, an unquoted `8` is a number (quote a name that looks like one).
    from_value(text::yaml_value(text)?)
}

/// Deserialize a JSON value (a scenario or a WVA document) with the path of the first offending
/// field in the error.
fn from_value(value: serde_json::Value) -> Result<Scenario, LoadError> {
    if value.get("system").is_some() {
        return wva::import(value);
    }
    text::from_json_value(value)
}

/// Any YAML or JSON document as a value, read with the same limits as a scenario (size,
/// duplicate keys), for bodies that are not scenarios (what-ifs).
pub fn parse_value(text: &str) -> Result<serde_json::Value, LoadError> {
    text::check_size(text)?;
    if text.trim_start().starts_with('{') { text::json_value(text) } else { text::yaml_value(text) }
}

/// Deserialize a value into `T`, naming the offending field's path.
pub fn from_value_at_path<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, LoadError> {
    text::from_json_value(value)
}

/// Parse and validate in one step.
pub fn load(text: &str) -> Result<Snapshot, LoadError> {
    Ok(validate(&parse(text)?)?)
}
