//! Scenarios: Allot's offline input (YAML or JSON, or WVA's optimizer JSON), validated into the
//! [`Snapshot`] the core plans on.

pub mod bundled;
pub mod format;
pub mod profile;
pub mod snapshot;
pub mod validate;
pub mod wva;

pub use format::Scenario;
pub use snapshot::Snapshot;
pub use validate::{Invalid, Problem, validate};

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
pub fn parse(text: &str) -> Result<Scenario, LoadError> {
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| LoadError::Parse {
            path: format!("line {} column {}", e.line(), e.column()),
            message: e.to_string(),
        })?;
        return from_value(value);
    }
    let yaml_error = |e: serde_saphyr::Error| LoadError::Parse { path: "(yaml)".into(), message: e.to_string() };
    // Probe the document's shape first; the typed parse below then reads scalars by the target
    // type (an accelerator named `Y` or `no` stays a string, not a YAML 1.1 boolean).
    let probe: serde_json::Value = serde_saphyr::from_str(text).map_err(yaml_error)?;
    if probe.get("system").is_some() {
        return from_value(probe);
    }
    serde_saphyr::from_str(text).map_err(yaml_error)
}

/// Deserialize a JSON value (a scenario or a WVA document) with the path of the first offending
/// field in the error.
fn from_value(value: serde_json::Value) -> Result<Scenario, LoadError> {
    if value.get("system").is_some() {
        let system: wva::WvaDocument = deserialize_at_path(value)?;
        return wva::convert(&system).map_err(LoadError::Invalid);
    }
    deserialize_at_path(value)
}

fn deserialize_at_path<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, LoadError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        LoadError::Parse {
            path: if path == "." { "(document)".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// Parse and validate in one step.
pub fn load(text: &str) -> Result<Snapshot, LoadError> {
    Ok(validate(&parse(text)?)?)
}
