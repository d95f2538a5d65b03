//! [`PrometheusCollector`]: per-model load and latency from vLLM's metrics (DESIGN §5).
//!
//! Every quantity is one PromQL query aggregated `by (model_name)` over all requested models, so a
//! cycle costs a fixed number of requests however many models there are. All queries of a cycle are
//! evaluated at the same instant and sent concurrently.
//!
//! Demand is **arrivals**, not completions: `rate(vllm:request_success_total)` saturates at the
//! model's capacity when it is overloaded (the requests it cannot serve wait in its queue), which is
//! how WVA under-provisions exactly when it matters (../shared/reference/wva.md §6.2). Requests are
//! conserved — every arrival is either finished or still running/waiting — so
//! `arrivals = completions + d(running + waiting)/dt`, with the derivative a least-squares slope
//! (`deriv`) over the same window.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;

use super::client::{ClientSettings, ConfigError, PrometheusClient, QueryError, Sample};
use super::{Collected, LoadSource, MetricsProblem, ModelMetrics, TokenHistogram};

/// What to ask Prometheus and how to judge the answer.
#[derive(Clone, Debug)]
pub struct CollectorSettings {
    pub client: ClientSettings,
    /// Window of every `rate`/`deriv` (default 1 min).
    pub rate_window: Duration,
    /// A model whose newest sample is older than this is `Stale` (default 120 s).
    pub staleness_limit: Duration,
    /// Extra label matchers added to every vLLM selector, e.g. `namespace="llm"`.
    pub matchers: Vec<String>,
    /// Where the gateway reports requests waiting for a replica.
    pub gateway: GatewayQueueSettings,
}

impl Default for CollectorSettings {
    fn default() -> Self {
        Self {
            client: ClientSettings::default(),
            rate_window: Duration::from_secs(60),
            staleness_limit: Duration::from_secs(120),
            matchers: Vec::new(),
            gateway: GatewayQueueSettings::default(),
        }
    }
}

/// The gateway's queue gauge: requests held for a model with no replica ready to take them.
/// A model scaled to zero has no vLLM pod and so no vLLM metric; this gauge is what brings it
/// back. The defaults are llm-d's Endpoint Picker flow-control gauge under its current name and
/// the deprecated one, read per `target_model_name`; an empty list turns the query off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayQueueSettings {
    /// Gauge names in order of preference: a model's value comes from the first that has it.
    pub metrics: Vec<String>,
    /// The label that carries the model (the VariantAutoscaling's `modelID`).
    pub model_label: String,
}

impl Default for GatewayQueueSettings {
    fn default() -> Self {
        Self {
            metrics: vec![
                "llm_d_epp_flow_control_queue_size".to_string(),
                "inference_extension_flow_control_queue_size".to_string(),
            ],
            model_label: "target_model_name".to_string(),
        }
    }
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(name: &str) -> bool {
    is_name(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    is_name(name, |c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_name(name: &str, allowed: impl Fn(char) -> bool) -> bool {
    name.chars().next().is_some_and(|c| !c.is_ascii_digit()) && name.chars().all(allowed)
}

/// The quantities queried each cycle; one PromQL query each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Completions,
    RunningGrowth,
    WaitingGrowth,
    Running,
    Waiting,
    PromptSum,
    PromptCount,
    GenerationSum,
    GenerationCount,
    PromptBuckets,
    GenerationBuckets,
    TtftSum,
    TtftCount,
    ItlSum,
    ItlCount,
    KvUsage,
    Age,
}

const FIELDS: [Field; 17] = [
    Field::Completions,
    Field::RunningGrowth,
    Field::WaitingGrowth,
    Field::Running,
    Field::Waiting,
    Field::PromptSum,
    Field::PromptCount,
    Field::GenerationSum,
    Field::GenerationCount,
    Field::PromptBuckets,
    Field::GenerationBuckets,
    Field::TtftSum,
    Field::TtftCount,
    Field::ItlSum,
    Field::ItlCount,
    Field::KvUsage,
    Field::Age,
];

impl Field {
    /// The vLLM metric behind the field, named in `Invalid` reports.
    fn metric(self) -> &'static str {
        match self {
            Field::Completions => "vllm:request_success_total",
            Field::RunningGrowth | Field::Running | Field::Age => "vllm:num_requests_running",
            Field::WaitingGrowth | Field::Waiting => "vllm:num_requests_waiting",
            Field::PromptSum => "vllm:request_prompt_tokens_sum",
            Field::PromptCount => "vllm:request_prompt_tokens_count",
            Field::GenerationSum => "vllm:request_generation_tokens_sum",
            Field::GenerationCount => "vllm:request_generation_tokens_count",
            Field::PromptBuckets => "vllm:request_prompt_tokens_bucket",
            Field::GenerationBuckets => "vllm:request_generation_tokens_bucket",
            Field::TtftSum => "vllm:time_to_first_token_seconds_sum",
            Field::TtftCount => "vllm:time_to_first_token_seconds_count",
            Field::ItlSum => "vllm:time_per_output_token_seconds_sum",
            Field::ItlCount => "vllm:time_per_output_token_seconds_count",
            Field::KvUsage => "vllm:kv_cache_usage_perc",
        }
    }

    /// The PromQL for this field; `selector` is `{model_name=~"…",…}`, `window` e.g. `1m`.
    fn promql(self, selector: &str, window: &str) -> String {
        let metric = self.metric();
        match self {
            Field::RunningGrowth | Field::WaitingGrowth => {
                format!("sum by (model_name) (deriv({metric}{selector}[{window}]))")
            }
            Field::Running | Field::Waiting => format!("sum by (model_name) ({metric}{selector})"),
            Field::Age => format!("time() - max by (model_name) (timestamp({metric}{selector}))"),
            // vLLM renamed the gauge in v0.10; a server exports one or both, with one value.
            Field::KvUsage => {
                format!("max by (model_name) ({metric}{selector} or vllm:gpu_cache_usage_perc{selector})")
            }
            Field::PromptBuckets | Field::GenerationBuckets => {
                format!("sum by (model_name, le) (rate({metric}{selector}[{window}]))")
            }
            _ => format!("sum by (model_name) (rate({metric}{selector}[{window}]))"),
        }
    }

    /// Growth (a slope) may be negative; everything else is a count, a gauge or an age.
    fn may_be_negative(self) -> bool {
        matches!(self, Field::RunningGrowth | Field::WaitingGrowth)
    }
}

/// Reads per-model load from Prometheus; see the module docs for the math.
#[derive(Clone, Debug)]
pub struct PrometheusCollector {
    client: PrometheusClient,
    window: String,
    staleness_limit_s: f64,
    matchers: Vec<String>,
    gateway: GatewayQueueSettings,
}

impl PrometheusCollector {
    pub fn new(settings: &CollectorSettings) -> Result<Self, ConfigError> {
        for (field, value) in [("rateWindow", settings.rate_window), ("stalenessLimit", settings.staleness_limit)] {
            if value < Duration::from_secs(1) {
                return Err(ConfigError::Duration { field, value });
            }
        }
        for (index, matcher) in settings.matchers.iter().enumerate() {
            if !is_label_matcher(matcher) {
                return Err(ConfigError::Matcher { index, matcher: matcher.clone() });
            }
        }
        let gateway = &settings.gateway;
        if let Some(bad) = gateway.metrics.iter().find(|m| !is_metric_name(m)) {
            return Err(ConfigError::Name { field: "gateway_queue.metrics", value: bad.clone() });
        }
        if !is_label_name(&gateway.model_label) {
            return Err(ConfigError::Name { field: "gateway_queue.model_label", value: gateway.model_label.clone() });
        }
        Ok(Self {
            client: PrometheusClient::new(&settings.client)?,
            window: promql_duration(settings.rate_window),
            staleness_limit_s: settings.staleness_limit.as_secs_f64(),
            matchers: settings.matchers.iter().map(|m| m.trim().to_string()).collect(),
            gateway: gateway.clone(),
        })
    }

    /// The gateway-queue query: each gauge summed per model, the earlier names winning (`or`
    /// keeps a later gauge's series only for models the earlier ones lack). `None` when off.
    pub fn gateway_query(&self, models: &[String]) -> Option<String> {
        let label = &self.gateway.model_label;
        let selector = format!("{{{label}=~\"{}\"}}", model_regex(models));
        let parts: Vec<String> =
            self.gateway.metrics.iter().map(|m| format!("sum by ({label}) ({m}{selector})")).collect();
        (!parts.is_empty()).then(|| parts.join(" or "))
    }

    /// Requests waiting at the gateway per model at `time_s`; models the gauge does not mention
    /// are left out (no gateway, or nothing waiting: the same to the plan).
    pub async fn gateway_waiting_at(
        &self,
        models: &[String],
        time_s: f64,
    ) -> Result<BTreeMap<String, f64>, MetricsProblem> {
        let Some(promql) = self.gateway_query(models).filter(|_| !models.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        let samples =
            self.client.query(&promql, time_s).await.map_err(|e| MetricsProblem::Unavailable(e.to_string()))?;
        let mut out = BTreeMap::new();
        for s in samples {
            let Some(model) = s.labels.get(&self.gateway.model_label).filter(|m| models.contains(*m)) else {
                continue;
            };
            if !(s.value.is_finite() && s.value >= 0.0) {
                return Err(MetricsProblem::Invalid {
                    model: model.clone(),
                    metric: self.gateway.metrics.join(" or "),
                    value: s.value.to_string(),
                });
            }
            out.insert(model.clone(), s.value);
        }
        Ok(out)
    }

    /// The selector shared by every query: the requested models plus the extra matchers.
    fn selector(&self, models: &[String]) -> String {
        let mut parts = vec![format!("model_name=~\"{}\"", model_regex(models))];
        parts.extend(self.matchers.iter().cloned());
        format!("{{{}}}", parts.join(","))
    }

    /// Each field's query, in `FIELDS` order (public through `queries` for logs and docs).
    pub fn queries(&self, models: &[String]) -> Vec<String> {
        let selector = self.selector(models);
        FIELDS.iter().map(|f| f.promql(&selector, &self.window)).collect()
    }

    /// Collects at an explicit evaluation time (Unix seconds); `collect` uses now.
    pub async fn collect_at(&self, models: &[String], time_s: f64) -> Collected {
        if models.is_empty() {
            return Collected::new();
        }
        match self.query_all(models, time_s).await {
            Ok(results) => {
                models.iter().map(|model| (model.clone(), assemble(model, &results, self.staleness_limit_s))).collect()
            }
            Err(error) => {
                tracing::warn!(%error, "prometheus query failed; every model held");
                let problem = MetricsProblem::Unavailable(error.to_string());
                models.iter().map(|m| (m.clone(), Err(problem.clone()))).collect()
            }
        }
    }

    async fn query_all(&self, models: &[String], time_s: f64) -> Result<Vec<Vec<Sample>>, QueryError> {
        let mut tasks = JoinSet::new();
        for (index, promql) in self.queries(models).into_iter().enumerate() {
            let client = self.client.clone();
            tasks.spawn(async move { (index, client.query(&promql, time_s).await) });
        }
        let mut results = vec![Vec::new(); FIELDS.len()];
        while let Some(joined) = tasks.join_next().await {
            let (index, result) =
                joined.map_err(|e| QueryError::Request { url: "query task".into(), reason: e.to_string() })?;
            results[index] = result?;
        }
        Ok(results)
    }
}

impl LoadSource for PrometheusCollector {
    async fn collect(&self, models: &[String]) -> Collected {
        self.collect_at(models, unix_now_s()).await
    }

    async fn gateway_waiting(&self, models: &[String]) -> Result<BTreeMap<String, f64>, MetricsProblem> {
        self.gateway_waiting_at(models, unix_now_s()).await
    }
}

fn unix_now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// One model's metrics from the per-field query results (indexed as `FIELDS`).
fn assemble(model: &str, results: &[Vec<Sample>], staleness_limit_s: f64) -> Result<ModelMetrics, MetricsProblem> {
    let value = |field: Field| -> Result<Option<f64>, MetricsProblem> {
        let index = FIELDS.iter().position(|f| *f == field).expect("every field is in FIELDS");
        let found = results[index].iter().find(|s| s.labels.get("model_name").is_some_and(|m| m == model));
        match found {
            None => Ok(None),
            Some(s) if s.value.is_finite() && (s.value >= 0.0 || field.may_be_negative()) => Ok(Some(s.value)),
            Some(s) => Err(MetricsProblem::Invalid {
                model: model.to_string(),
                metric: field.metric().to_string(),
                value: s.value.to_string(),
            }),
        }
    };
    // Presence is judged on the gauges: a model with no traffic still exports them, and its
    // arrival rate of 0 is data, not a gap.
    let (Some(age_s), Some(running), Some(waiting)) =
        (value(Field::Age)?, value(Field::Running)?, value(Field::Waiting)?)
    else {
        return Err(MetricsProblem::Missing(model.to_string()));
    };
    if age_s > staleness_limit_s {
        return Err(MetricsProblem::Stale { model: model.to_string(), age_s, limit_s: staleness_limit_s });
    }
    // A counter needs two samples in the window before `rate` answers; until then nothing finished.
    let completions = value(Field::Completions)?;
    let (running_growth, waiting_growth) = (value(Field::RunningGrowth)?, value(Field::WaitingGrowth)?);
    // Fresh samples, requests in flight, and over a whole window (rate and deriv both answered)
    // nothing finished and the queue did not move: the engine or its exporter is stuck. Reading
    // that as zero load would scale the model down until the samples went stale.
    let in_flight = running + waiting;
    if in_flight > 0.0 && completions == Some(0.0) && running_growth == Some(0.0) && waiting_growth == Some(0.0) {
        return Err(MetricsProblem::Stuck { model: model.to_string(), in_flight });
    }
    let completion_rps = completions.unwrap_or(0.0);
    let growth_rps = running_growth.unwrap_or(0.0) + waiting_growth.unwrap_or(0.0);
    let mean = |sum: Field, count: Field| -> Result<Option<f64>, MetricsProblem> {
        Ok(match (value(sum)?, value(count)?) {
            (Some(sum), Some(count)) if count > 0.0 => Some(sum / count),
            _ => None,
        })
    };
    let samples = |field: Field| -> &[Sample] {
        let index = FIELDS.iter().position(|f| *f == field).expect("every field is in FIELDS");
        &results[index]
    };
    Ok(ModelMetrics {
        model: model.to_string(),
        arrival_rps: (completion_rps + growth_rps).max(0.0),
        completion_rps,
        input_tokens: mean(Field::PromptSum, Field::PromptCount)?,
        output_tokens: mean(Field::GenerationSum, Field::GenerationCount)?,
        input_histogram: histogram(model, samples(Field::PromptBuckets)),
        output_histogram: histogram(model, samples(Field::GenerationBuckets)),
        running,
        waiting,
        ttft_mean_s: mean(Field::TtftSum, Field::TtftCount)?,
        itl_mean_s: mean(Field::ItlSum, Field::ItlCount)?,
        // Evidence, not load: a bad value costs the evidence, not the model's plan.
        kv_usage_max: value(Field::KvUsage).ok().flatten().filter(|k| *k <= 1.0 + 1e-9).map(|k| k.min(1.0)),
        age_s,
    })
}

/// One model's token histogram from `sum by (model_name, le) (rate(…_bucket[w]))`, or `None`
/// when it has no observations or a bucket is unusable (a bad `le`, a NaN or negative rate): the
/// mean size still plans, so a broken histogram costs precision, not the model's plan. `rate`
/// extrapolates each bucket's counter on its own, so the cumulative rates are made
/// non-decreasing and capped at the `+Inf` bucket.
fn histogram(model: &str, samples: &[Sample]) -> Option<TokenHistogram> {
    let mut count = None;
    let mut buckets = Vec::new();
    for s in samples.iter().filter(|s| s.labels.get("model_name").is_some_and(|m| m == model)) {
        let le = s.labels.get("le")?;
        if !(s.value.is_finite() && s.value >= 0.0) {
            tracing::debug!(model, le, value = s.value, "token histogram bucket unusable; planning on the mean");
            return None;
        }
        if le == "+Inf" {
            count = Some(s.value);
        } else {
            let bound: f64 = le.parse().ok().filter(|b: &f64| b.is_finite() && *b > 0.0)?;
            buckets.push((bound, s.value));
        }
    }
    let count = count.filter(|c| *c > 0.0)?;
    if buckets.is_empty() {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets.dedup_by(|later, earlier| later.0 == earlier.0);
    let mut running = 0.0_f64;
    for bucket in &mut buckets {
        running = running.max(bucket.1).min(count);
        bucket.1 = running;
    }
    Some(TokenHistogram { buckets, count })
}

/// The content of a PromQL string literal holding an anchored RE2 alternation of exactly `models`:
/// regex metacharacters escaped for RE2, then backslashes and quotes escaped for PromQL.
fn model_regex(models: &[String]) -> String {
    let alternation = models
        .iter()
        .map(|model| {
            let mut escaped = String::with_capacity(model.len());
            for c in model.chars() {
                if "\\.+*?()|[]{}^$".contains(c) {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            escaped
        })
        .collect::<Vec<_>>()
        .join("|");
    alternation.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A PromQL duration: whole seconds as `90s`, otherwise milliseconds.
fn promql_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// `label="value"` with one of `=`, `!=`, `=~`, `!~`, and a quoted value without a bare quote.
fn is_label_matcher(matcher: &str) -> bool {
    let matcher = matcher.trim();
    let name_len = matcher.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(matcher.len());
    let (name, rest) = matcher.split_at(name_len);
    if !is_label_name(name) {
        return false;
    }
    let rest = rest.trim_start();
    let Some(value) = ["=~", "!~", "!=", "="].iter().find_map(|op| rest.strip_prefix(op)) else {
        return false;
    };
    let value = value.trim();
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return false;
    };
    // Every quote inside must be escaped, and the value must not end in a lone backslash.
    let mut escaped = false;
    for c in inner.chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, '"') => return false,
            _ => escaped = false,
        }
    }
    !escaped
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn sample(model: &str, value: f64) -> Sample {
        Sample { labels: BTreeMap::from([("model_name".to_string(), model.to_string())]), value }
    }

    /// Results with `values[field]` for model "m" (fields not listed have no series).
    fn results(values: &[(Field, f64)]) -> Vec<Vec<Sample>> {
        FIELDS.iter().map(|f| values.iter().filter(|(g, _)| g == f).map(|(_, v)| sample("m", *v)).collect()).collect()
    }

    fn healthy() -> Vec<(Field, f64)> {
        vec![
            (Field::Completions, 4.0),
            (Field::RunningGrowth, 0.5),
            (Field::WaitingGrowth, 1.5),
            (Field::Running, 12.0),
            (Field::Waiting, 30.0),
            (Field::PromptSum, 2000.0),
            (Field::PromptCount, 4.0),
            (Field::GenerationSum, 600.0),
            (Field::GenerationCount, 4.0),
            (Field::TtftSum, 2.0),
            (Field::TtftCount, 4.0),
            (Field::ItlSum, 30.0),
            (Field::ItlCount, 600.0),
            (Field::Age, 3.0),
        ]
    }

    fn bucket(model: &str, le: &str, value: f64) -> Sample {
        Sample {
            labels: BTreeMap::from([("model_name".to_string(), model.to_string()), ("le".to_string(), le.to_string())]),
            value,
        }
    }

    #[test]
    fn the_gateway_query_prefers_the_current_gauge_and_can_be_turned_off() {
        let collector = PrometheusCollector::new(&CollectorSettings::default()).expect("defaults are valid");
        assert_eq!(
            collector.gateway_query(&["a.b".to_string()]).expect("on by default"),
            "sum by (target_model_name) (llm_d_epp_flow_control_queue_size{target_model_name=~\"a\\\\.b\"}) \
             or sum by (target_model_name) (inference_extension_flow_control_queue_size{target_model_name=~\"a\\\\.b\"})"
        );
        let off = CollectorSettings {
            gateway: GatewayQueueSettings { metrics: vec![], ..GatewayQueueSettings::default() },
            ..CollectorSettings::default()
        };
        assert_eq!(PrometheusCollector::new(&off).expect("valid").gateway_query(&["a".to_string()]), None);
        for (metrics, label) in [(vec!["bad name".to_string()], "m"), (vec!["ok".to_string()], "a:b"), (vec![], "")] {
            let bad = CollectorSettings {
                gateway: GatewayQueueSettings { metrics, model_label: label.to_string() },
                ..CollectorSettings::default()
            };
            assert!(matches!(PrometheusCollector::new(&bad), Err(ConfigError::Name { .. })), "{label:?}");
        }
    }

    #[test]
    fn kv_cache_usage_is_evidence_a_bad_value_loses_it_not_the_model() {
        for (value, expected) in [(0.97, Some(0.97)), (1.0, Some(1.0)), (f64::NAN, None), (1.7, None), (-0.1, None)] {
            let mut fields = healthy();
            fields.push((Field::KvUsage, value));
            let m = assemble("m", &results(&fields), 120.0).expect("the load is still usable");
            assert_eq!(m.kv_usage_max, expected, "{value}");
        }
        assert_eq!(assemble("m", &results(&healthy()), 120.0).expect("healthy").kv_usage_max, None);
    }

    #[test]
    fn prompt_sizes_come_from_the_histogram_buckets() {
        let mut r = results(&healthy());
        let at = FIELDS.iter().position(|f| *f == Field::PromptBuckets).expect("field");
        // Out of order, one bucket extrapolated a little above the next (rate per counter), and
        // another model's series that must not leak in.
        r[at] = vec![
            bucket("m", "+Inf", 4.0),
            bucket("m", "1024", 3.9),
            bucket("m", "256", 1.0),
            bucket("m", "512", 3.95),
            bucket("other", "256", 100.0),
        ];
        let m = assemble("m", &r, 120.0).expect("healthy metrics");
        let h = m.input_histogram.expect("buckets answered");
        assert_eq!(h.count, 4.0);
        assert_eq!(h.buckets, vec![(256.0, 1.0), (512.0, 3.95), (1024.0, 3.95)]);
        // No generation buckets were answered: none, and the mean still stands.
        assert_eq!((m.output_histogram, m.output_tokens), (None, Some(150.0)));
    }

    #[test]
    fn an_unusable_histogram_is_dropped_not_the_model() {
        for broken in [
            vec![bucket("m", "256", f64::NAN), bucket("m", "+Inf", 4.0)],
            vec![bucket("m", "256", -1.0), bucket("m", "+Inf", 4.0)],
            vec![bucket("m", "lots", 1.0), bucket("m", "+Inf", 4.0)],
            // Nothing finished in the window.
            vec![bucket("m", "256", 0.0), bucket("m", "+Inf", 0.0)],
            // Only the +Inf bucket: no shape to read.
            vec![bucket("m", "+Inf", 4.0)],
        ] {
            let mut r = results(&healthy());
            let at = FIELDS.iter().position(|f| *f == Field::PromptBuckets).expect("field");
            r[at] = broken.clone();
            let m = assemble("m", &r, 120.0).expect("the model keeps its metrics");
            assert_eq!(m.input_histogram, None, "{broken:?}");
            assert_eq!(m.input_tokens, Some(500.0));
        }
    }

    #[test]
    fn arrivals_are_completions_plus_queue_growth() {
        let m = assemble("m", &results(&healthy()), 120.0).expect("healthy metrics");
        assert_eq!(m.completion_rps, 4.0);
        assert_eq!(m.arrival_rps, 6.0);
        assert_eq!(m.input_tokens, Some(500.0));
        assert_eq!(m.output_tokens, Some(150.0));
        assert_eq!(m.ttft_mean_s, Some(0.5));
        assert_eq!(m.itl_mean_s, Some(0.05));
        assert_eq!((m.running, m.waiting, m.age_s), (12.0, 30.0, 3.0));
    }

    #[test]
    fn draining_queue_lowers_arrivals_but_never_below_zero() {
        let mut values = healthy();
        values.retain(|(f, _)| *f != Field::WaitingGrowth);
        values.push((Field::WaitingGrowth, -3.0));
        let m = assemble("m", &results(&values), 120.0).expect("healthy metrics");
        assert_eq!(m.arrival_rps, 1.5);
        values.retain(|(f, _)| *f != Field::WaitingGrowth);
        values.push((Field::WaitingGrowth, -30.0));
        assert_eq!(assemble("m", &results(&values), 120.0).expect("healthy").arrival_rps, 0.0);
    }

    #[test]
    fn idle_model_with_fresh_gauges_is_zero_load_not_missing() {
        let values = [(Field::Running, 0.0), (Field::Waiting, 0.0), (Field::Age, 1.0), (Field::PromptCount, 0.0)];
        let m = assemble("m", &results(&values), 120.0).expect("idle is data");
        assert_eq!((m.arrival_rps, m.completion_rps), (0.0, 0.0));
        assert_eq!((m.input_tokens, m.ttft_mean_s), (None, None));
    }

    #[test]
    fn flat_counters_with_requests_in_flight_are_a_stuck_exporter_not_zero_load() {
        let stuck = [
            (Field::Completions, 0.0),
            (Field::RunningGrowth, 0.0),
            (Field::WaitingGrowth, 0.0),
            (Field::Running, 6.0),
            (Field::Waiting, 2.0),
            (Field::Age, 3.0),
        ];
        assert_eq!(
            assemble("m", &results(&stuck), 120.0),
            Err(MetricsProblem::Stuck { model: "m".into(), in_flight: 8.0 })
        );
        // A model that just started: rate and deriv have no two samples yet — unknown, not stuck.
        let warming = [(Field::Running, 6.0), (Field::Waiting, 0.0), (Field::Age, 3.0)];
        assert!(assemble("m", &results(&warming), 120.0).is_ok());
        // Long requests still move the queue or finish some: not stuck.
        let mut moving = stuck.to_vec();
        moving[1] = (Field::RunningGrowth, 0.1);
        assert!(assemble("m", &results(&moving), 120.0).is_ok());
    }

    #[test]
    fn no_gauges_is_missing() {
        let values = [(Field::Completions, 1.0)];
        assert_eq!(assemble("m", &results(&values), 120.0), Err(MetricsProblem::Missing("m".into())));
        assert_eq!(assemble("other", &results(&healthy()), 120.0), Err(MetricsProblem::Missing("other".into())));
    }

    #[test]
    fn old_samples_are_stale() {
        let mut values = healthy();
        values.retain(|(f, _)| *f != Field::Age);
        values.push((Field::Age, 121.0));
        let expected = MetricsProblem::Stale { model: "m".into(), age_s: 121.0, limit_s: 120.0 };
        assert_eq!(assemble("m", &results(&values), 120.0), Err(expected));
    }

    #[test]
    fn nan_infinite_or_negative_values_are_invalid() {
        for (field, bad) in [
            (Field::TtftSum, f64::NAN),
            (Field::Completions, f64::INFINITY),
            (Field::Waiting, -1.0),
            (Field::RunningGrowth, f64::NEG_INFINITY),
        ] {
            let mut values = healthy();
            values.retain(|(f, _)| *f != field);
            values.push((field, bad));
            match assemble("m", &results(&values), 120.0) {
                Err(MetricsProblem::Invalid { model, metric, .. }) => {
                    assert_eq!(model, "m");
                    assert_eq!(metric, field.metric());
                }
                other => panic!("{field:?} = {bad}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn model_names_are_matched_literally() {
        let models = ["meta-llama/Llama-3.1-8B".to_string(), "a+b|c\"d".to_string()];
        assert_eq!(model_regex(&models), r#"meta-llama/Llama-3\\.1-8B|a\\+b\\|c\"d"#);
    }

    #[test]
    fn queries_carry_models_matchers_and_window() {
        let settings = CollectorSettings {
            matchers: vec!["namespace=\"llm\"".into()],
            rate_window: Duration::from_secs(90),
            ..CollectorSettings::default()
        };
        let collector = PrometheusCollector::new(&settings).expect("valid settings");
        let queries = collector.queries(&["a".to_string(), "b".to_string()]);
        assert_eq!(queries.len(), FIELDS.len());
        assert_eq!(
            queries[0],
            r#"sum by (model_name) (rate(vllm:request_success_total{model_name=~"a|b",namespace="llm"}[90s]))"#
        );
        assert!(queries.iter().all(|q| q.contains(r#"{model_name=~"a|b",namespace="llm"}"#)), "{queries:?}");
    }

    #[test]
    fn bad_matchers_and_windows_are_rejected() {
        for matcher in ["namespace", "namespace=llm", "=\"x\"", "1ns=\"x\"", "ns=\"a\"b\"", "ns=\"x\\\"", "ns=~\"x\"}"]
        {
            assert!(!is_label_matcher(matcher), "accepted {matcher:?}");
        }
        for matcher in ["namespace=\"llm\"", "pod !~ \"test-.*\"", "a_b=\"q\\\"uote\""] {
            assert!(is_label_matcher(matcher), "rejected {matcher:?}");
        }
        let settings = CollectorSettings { rate_window: Duration::from_millis(500), ..CollectorSettings::default() };
        assert!(matches!(PrometheusCollector::new(&settings), Err(ConfigError::Duration { .. })));
    }

    #[test]
    fn durations_are_promql_durations() {
        assert_eq!(promql_duration(Duration::from_secs(60)), "60s");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[tokio::test]
    async fn unreachable_prometheus_makes_every_model_unavailable() {
        // Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
        let settings = CollectorSettings {
            client: ClientSettings {
                url: "http://127.0.0.1:9".into(),
                timeout: Duration::from_secs(2),
                ..ClientSettings::default()
            },
            ..CollectorSettings::default()
        };
        let collector = PrometheusCollector::new(&settings).expect("valid settings");
        let collected = collector.collect(&["a".to_string(), "b".to_string()]).await;
        assert_eq!(collected.len(), 2);
        assert!(collected.values().all(|r| matches!(r, Err(MetricsProblem::Unavailable(_)))), "{collected:?}");
    }
}
