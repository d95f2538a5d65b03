//! A small client for Prometheus's instant-query API (`/api/v1/query`): TLS settings, a bearer
//! token re-read on every request (so a rotated service-account token keeps working), and a
//! parser that never panics on what comes back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How to reach Prometheus.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Base URL, e.g. `https://prometheus.monitoring:9090` (a path prefix such as
    /// `/prometheus` is kept).
    pub url: String,
    /// PEM file with the CA certificate(s) that signed Prometheus's certificate, added to the
    /// system roots.
    pub ca_cert_file: Option<PathBuf>,
    /// Accept any server certificate. For test clusters only.
    pub insecure_skip_verify: bool,
    /// File holding a bearer token, read before every request.
    pub bearer_token_file: Option<PathBuf>,
    /// Limit for one HTTP request, connect included.
    pub timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            url: "http://localhost:9090".to_string(),
            ca_cert_file: None,
            insecure_skip_verify: false,
            bearer_token_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A settings problem found when the client is built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("prometheus.url: must start with http:// or https://, got {0:?}")]
    Url(String),
    #[error("prometheus.caCertFile: cannot read {path}: {reason}")]
    CaCert { path: String, reason: String },
    #[error("prometheus: cannot build the HTTP client: {0}")]
    Client(String),
    #[error("prometheus.matchers[{index}]: expected `label=\"value\"` (or !=, =~, !~), got {matcher:?}")]
    Matcher { index: usize, matcher: String },
    #[error("prometheus.{field}: must be at least 1 s, got {value:?}")]
    Duration { field: &'static str, value: Duration },
    #[error("prometheus.{field}: {value:?} is not a Prometheus metric or label name")]
    Name { field: &'static str, value: String },
}

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cannot read bearer token file {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("request to {url} failed: {reason}")]
    Request { url: String, reason: String },
    #[error("prometheus answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("prometheus answered {error_type}: {error}")]
    Api { error_type: String, error: String },
    #[error("malformed prometheus response: {0}")]
    Malformed(String),
}

/// One element of an instant vector: its labels and its value (NaN and ±Inf kept as such).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// An instant-query client. Cheap to clone (the HTTP client is shared).
#[derive(Clone, Debug)]
pub struct PrometheusClient {
    http: reqwest::Client,
    query_url: String,
    bearer_token_file: Option<PathBuf>,
}

impl PrometheusClient {
    pub fn new(settings: &ClientSettings) -> Result<Self, ConfigError> {
        let base = settings.url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ConfigError::Url(settings.url.clone()));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .danger_accept_invalid_certs(settings.insecure_skip_verify);
        if let Some(path) = &settings.ca_cert_file {
            let ca_error = |reason: String| ConfigError::CaCert { path: path.display().to_string(), reason };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no PEM certificate in the file".to_string()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Self {
            http,
            query_url: format!("{base}/api/v1/query"),
            bearer_token_file: settings.bearer_token_file.clone(),
        })
    }

    /// Evaluates `promql` at `time_s` (Unix seconds) and returns the instant vector. A scalar
    /// result comes back as one sample without labels.
    pub async fn query(&self, promql: &str, time_s: f64) -> Result<Vec<Sample>, QueryError> {
        let mut request = self.http.post(&self.query_url).form(&[("query", promql), ("time", &format!("{time_s:.3}"))]);
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| QueryError::Token { path: path.display().to_string(), reason: e.to_string() })?;
            request = request.bearer_auth(token.trim());
        }
        let request_error =
            |e: reqwest::Error| QueryError::Request { url: self.query_url.clone(), reason: error_chain(&e) };
        let response = request.send().await.map_err(request_error)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(request_error)?;
        parse_response(status, &body)
    }
}

/// reqwest's top-level message ("error sending request") hides the cause; keep the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Parses an `/api/v1/query` answer. Prometheus sends its JSON error envelope with 4xx/5xx
/// statuses, so the envelope is read first and the status only decides when it is absent.
pub fn parse_response(status: u16, body: &[u8]) -> Result<Vec<Sample>, QueryError> {
    let json: Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(_) if status != 200 => return Err(QueryError::Status { status, body: snippet(body) }),
        Err(e) => return Err(QueryError::Malformed(format!("not JSON ({e}): {}", snippet(body)))),
    };
    match json.get("status").and_then(Value::as_str) {
        Some("success") if status == 200 => {}
        Some("error") => {
            let text = |key: &str| json.get(key).and_then(Value::as_str).unwrap_or("").to_string();
            return Err(QueryError::Api { error_type: text("errorType"), error: text("error") });
        }
        _ if status != 200 => return Err(QueryError::Status { status, body: snippet(body) }),
        other => return Err(QueryError::Malformed(format!("status {other:?}, expected \"success\""))),
    }
    let data = json.get("data").ok_or_else(|| QueryError::Malformed("no `data`".to_string()))?;
    let result = data.get("result").ok_or_else(|| QueryError::Malformed("no `data.result`".to_string()))?;
    match data.get("resultType").and_then(Value::as_str) {
        Some("vector") => {
            let elements =
                result.as_array().ok_or_else(|| QueryError::Malformed("vector result is not a list".into()))?;
            elements.iter().map(parse_vector_element).collect()
        }
        Some("scalar") => Ok(vec![Sample { labels: BTreeMap::new(), value: parse_sample_pair(result)? }]),
        other => Err(QueryError::Malformed(format!("resultType {other:?}, expected \"vector\" or \"scalar\""))),
    }
}

fn parse_vector_element(element: &Value) -> Result<Sample, QueryError> {
    let labels = match element.get("metric") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => Ok((k.clone(), s.to_string())),
                None => Err(QueryError::Malformed(format!("label {k} is not a string: {v}"))),
            })
            .collect::<Result<_, _>>()?,
        None => BTreeMap::new(),
        Some(other) => return Err(QueryError::Malformed(format!("`metric` is not an object: {other}"))),
    };
    let value = element.get("value").ok_or_else(|| QueryError::Malformed("vector element without `value`".into()))?;
    Ok(Sample { labels, value: parse_sample_pair(value)? })
}

/// `[<unix time>, "<value>"]`; Prometheus writes NaN and infinities as `"NaN"`, `"+Inf"`, `"-Inf"`.
fn parse_sample_pair(pair: &Value) -> Result<f64, QueryError> {
    let text = pair
        .as_array()
        .filter(|a| a.len() == 2 && a[0].is_number())
        .and_then(|a| a[1].as_str())
        .ok_or_else(|| QueryError::Malformed(format!("sample is not [time, \"value\"]: {pair}")))?;
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse::<f64>().map_err(|_| QueryError::Malformed(format!("sample value {text:?} is not a number"))),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> Vec<Sample> {
        parse_response(200, body.as_bytes()).expect("a valid response")
    }

    #[test]
    fn vector_result_keeps_labels_and_values() {
        let samples = ok(r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"model_name":"llama"},"value":[1700000000.5,"1.25"]},
            {"metric":{},"value":[1700000000.5,"0"]}]}}"#);
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].labels.get("model_name").map(String::as_str), Some("llama"));
        assert_eq!(samples[0].value, 1.25);
        assert!(samples[1].labels.is_empty());
        assert_eq!(samples[1].value, 0.0);
    }

    #[test]
    fn empty_vector_is_no_samples_not_an_error() {
        assert!(ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#).is_empty());
    }

    #[test]
    fn scalar_result_is_one_unlabelled_sample() {
        let samples = ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}"#);
        assert_eq!(samples, vec![Sample { labels: BTreeMap::new(), value: 42.0 }]);
    }

    #[test]
    fn nan_and_infinities_are_parsed_not_rejected() {
        let samples = ok(r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"a":"1"},"value":[1,"NaN"]},{"metric":{"a":"2"},"value":[1,"+Inf"]},
            {"metric":{"a":"3"},"value":[1,"-Inf"]},{"metric":{"a":"4"},"value":[1,"1e-3"]}]}}"#);
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[1].value, f64::INFINITY);
        assert_eq!(samples[2].value, f64::NEG_INFINITY);
        assert_eq!(samples[3].value, 0.001);
    }

    #[test]
    fn error_envelope_reports_type_and_message() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#;
        match parse_response(400, body.as_bytes()) {
            Err(QueryError::Api { error_type, error }) => {
                assert_eq!(error_type, "bad_data");
                assert!(error.contains("parse error"), "{error}");
            }
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[test]
    fn non_json_error_page_reports_the_status() {
        match parse_response(502, b"<html>Bad Gateway</html>") {
            Err(QueryError::Status { status: 502, body }) => assert!(body.contains("Bad Gateway")),
            other => panic!("expected a status error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        let bodies: &[&str] = &[
            "",
            "not json",
            "[]",
            "{}",
            r#"{"status":"success"}"#,
            r#"{"status":"success","data":{}}"#,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":{}}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1]}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":["x","2"]}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"two"]}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":1},"value":[1,"2"]}]}}"#,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":[],"value":[1,"2"]}]}}"#,
            r#"{"status":"success","data":{"resultType":"scalar","result":null}}"#,
        ];
        for body in bodies {
            assert!(parse_response(200, body.as_bytes()).is_err(), "accepted {body:?}");
        }
    }

    #[test]
    fn success_body_with_error_status_is_not_trusted() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(matches!(parse_response(503, body.as_bytes()), Err(QueryError::Status { status: 503, .. })));
    }

    #[test]
    fn url_without_scheme_is_rejected() {
        let settings = ClientSettings { url: "prometheus:9090".into(), ..ClientSettings::default() };
        assert!(matches!(PrometheusClient::new(&settings), Err(ConfigError::Url(_))));
    }

    #[test]
    fn unreadable_ca_file_names_the_file() {
        let settings = ClientSettings { ca_cert_file: Some("/nonexistent/ca.pem".into()), ..ClientSettings::default() };
        let err = PrometheusClient::new(&settings).expect_err("missing CA file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
