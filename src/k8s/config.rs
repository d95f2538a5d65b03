//! The controller's configuration, read from ConfigMaps (documented in `docs/kubernetes.md`):
//!
//! - WVA's `accelerator-unit-costs` and `service-classes-config`, parsed exactly as WVA does
//!   (reference/wva.md §1.4), so an existing installation keeps working;
//! - WVA's controller ConfigMap (`GLOBAL_OPT_INTERVAL`, `PROMETHEUS_*`, `WVA_SCALE_TO_ZERO`), read
//!   as defaults;
//! - Allot's own `allot-config` (key `config.yaml`): optimizer settings in the scenario format's
//!   `optimizer:` block, accelerator pools, Prometheus connection and the cycle interval.
//!
//! Parsing is pure: the caller passes each ConfigMap's `data`. Every problem names the ConfigMap,
//! the key and the field; nothing here panics on input.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::analyze::Statistic;
use crate::controller::{Behavior, Controls};
use crate::scenario::format::OptimizerSpec;

/// Namespace WVA reads its ConfigMaps from; Allot's default too.
pub const WVA_NAMESPACE: &str = "workload-variant-autoscaler-system";
/// WVA's accelerator price list.
pub const ACCELERATOR_COSTS_CONFIG_MAP: &str = "accelerator-unit-costs";
/// WVA's service classes.
pub const SERVICE_CLASSES_CONFIG_MAP: &str = "service-classes-config";
/// WVA's controller settings (the kustomize prefix is part of the name).
pub const WVA_CONTROLLER_CONFIG_MAP: &str = "workload-variant-autoscaler-variantautoscaling-config";
/// Allot's own settings.
pub const ALLOT_CONFIG_MAP: &str = "allot-config";
/// The data key of `allot-config` holding its YAML.
pub const ALLOT_CONFIG_KEY: &str = "config.yaml";

/// WVA's priority for classes whose priority is outside [1, 100] (`DefaultServiceClassPriority`).
pub const DEFAULT_PRIORITY: u32 = 100;
/// Planning cycle when nothing configures one (WVA used 60 s).
pub const DEFAULT_CYCLE_INTERVAL: Duration = Duration::from_secs(30);
/// Load samples older than this hold their model (WVA used 5 min; a 30 s cycle wants less).
pub const DEFAULT_METRICS_STALENESS: Duration = Duration::from_secs(120);
/// How long an accelerator type the scheduler said is full stays full without new evidence
/// (`observe::pending`).
pub const DEFAULT_FULL_TYPE_MEMORY: Duration = Duration::from_secs(600);

/// One thing wrong with a ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub config_map: String,
    pub key: String,
    /// Path inside the value (`cost`, `data[1].slo-ttft`); empty for the value as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigMap {}, key {:?}", self.config_map, self.key)?;
        if !self.field.is_empty() {
            write!(f, ", field {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything wrong with the configuration; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

struct Problems<'a> {
    config_map: &'a str,
    list: Vec<ConfigProblem>,
}

impl<'a> Problems<'a> {
    fn new(config_map: &'a str) -> Self {
        Self { config_map, list: Vec::new() }
    }

    fn push(&mut self, key: &str, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(ConfigProblem {
            config_map: self.config_map.to_string(),
            key: key.to_string(),
            field: field.into(),
            message: message.into(),
        });
    }

    fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() { Ok(value) } else { Err(ConfigError { problems: self.list }) }
    }
}

// ---------------------------------------------------------------------------------------------
// accelerator-unit-costs

/// One accelerator of `accelerator-unit-costs`: `A100: {"device": "NVIDIA-A100-PCIE-80GB", "cost": "40.00"}`.
#[derive(Clone, Debug, PartialEq)]
pub struct AcceleratorCost {
    /// The data key; what VariantAutoscalings name in `acc` and the accelerator label.
    pub name: String,
    /// GPU product as nodes label it (`nvidia.com/gpu.product`); inventory is counted per device.
    pub device: String,
    /// Price of one GPU for one hour, in the ConfigMap's unit (WVA: cents).
    pub cost: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcceleratorCost {
    device: String,
    cost: String,
}

/// Parse `accelerator-unit-costs`. Sorted by name. Two names for one device are refused:
/// inventory is per device, so it would be counted twice.
pub fn parse_accelerator_costs(data: &BTreeMap<String, String>) -> Result<Vec<AcceleratorCost>, ConfigError> {
    let mut problems = Problems::new(ACCELERATOR_COSTS_CONFIG_MAP);
    let mut out = Vec::new();
    let mut by_device: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in data {
        let raw: RawAcceleratorCost = match serde_json::from_str(value) {
            Ok(r) => r,
            Err(e) => {
                problems.push(name, "", format!("expected JSON {{\"device\": \"...\", \"cost\": \"40.00\"}}: {e}"));
                continue;
            }
        };
        if raw.device.trim().is_empty() {
            problems.push(name, "device", "must name the GPU product (e.g. NVIDIA-A100-SXM4-80GB)");
            continue;
        }
        let cost = match raw.cost.trim().parse::<f64>() {
            Ok(c) if c.is_finite() && c >= 0.0 => c,
            _ => {
                problems.push(name, "cost", format!("must be a decimal number ≥ 0, got {:?}", raw.cost));
                continue;
            }
        };
        if let Some(other) = by_device.insert(raw.device.clone(), name.clone()) {
            problems.push(
                name,
                "device",
                format!("device {:?} is already named {other:?}; give each device one name", raw.device),
            );
            continue;
        }
        out.push(AcceleratorCost { name: name.clone(), device: raw.device, cost });
    }
    problems.finish(out)
}

// ---------------------------------------------------------------------------------------------
// service-classes-config

/// One service class of `service-classes-config`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceClass {
    pub name: String,
    /// Smaller is more important; WVA's out-of-range values already mapped to 100.
    pub priority: u32,
    /// Allot extension: share inside a priority tier when GPUs are short.
    pub weight: Option<f64>,
    /// Targets per model, in the ConfigMap's order.
    pub targets: Vec<ModelTarget>,
    /// The data key the class came from.
    pub key: String,
}

/// Latency targets of one model in a class. A target of 0 (or absent) means none.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelTarget {
    pub model: String,
    /// `slo-tpot`: inter-token latency, ms.
    pub itl_ms: Option<f64>,
    /// `slo-ttft`: time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Allot extension `slo-tpot-statistic`: which statistic the ITL target bounds (default mean).
    pub itl_statistic: Statistic,
    /// Allot extension `slo-ttft-statistic` (default mean).
    pub ttft_statistic: Statistic,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceClass {
    name: String,
    priority: i64,
    #[serde(default)]
    weight: Option<f64>,
    #[serde(default)]
    data: Vec<RawModelTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelTarget {
    model: String,
    #[serde(rename = "slo-tpot", default)]
    slo_tpot: f64,
    #[serde(rename = "slo-ttft", default)]
    slo_ttft: f64,
    #[serde(rename = "slo-tpot-statistic", default)]
    slo_tpot_statistic: Statistic,
    #[serde(rename = "slo-ttft-statistic", default)]
    slo_ttft_statistic: Statistic,
}

/// Parse `service-classes-config`: each data value is one class in YAML. Sorted by name.
pub fn parse_service_classes(data: &BTreeMap<String, String>) -> Result<Vec<ServiceClass>, ConfigError> {
    let mut problems = Problems::new(SERVICE_CLASSES_CONFIG_MAP);
    let mut out: BTreeMap<String, ServiceClass> = BTreeMap::new();
    for (key, value) in data {
        let raw: RawServiceClass = match serde_saphyr::from_str(value) {
            Ok(r) => r,
            Err(e) => {
                problems.push(
                    key,
                    "",
                    format!("expected YAML {{name, priority, data: [{{model, slo-tpot, slo-ttft}}]}}: {e}"),
                );
                continue;
            }
        };
        if raw.name.trim().is_empty() {
            problems.push(key, "name", "must not be empty");
            continue;
        }
        let priority = u32::try_from(raw.priority).ok().filter(|p| (1..=100).contains(p)).unwrap_or(DEFAULT_PRIORITY);
        if let Some(w) = raw.weight
            && !(w.is_finite() && w > 0.0)
        {
            problems.push(key, "weight", format!("must be a number > 0, got {w}"));
        }
        let mut targets: Vec<ModelTarget> = Vec::new();
        for (i, t) in raw.data.iter().enumerate() {
            let field = |f: &str| format!("data[{i}].{f}");
            if t.model.trim().is_empty() {
                problems.push(key, field("model"), "must not be empty");
                continue;
            }
            let mut ms = |name: &str, v: f64| -> Option<f64> {
                if !v.is_finite() || v < 0.0 {
                    problems.push(key, field(name), format!("must be a number of milliseconds ≥ 0, got {v}"));
                }
                (v.is_finite() && v > 0.0).then_some(v)
            };
            let itl_ms = ms("slo-tpot", t.slo_tpot);
            let ttft_ms = ms("slo-ttft", t.slo_ttft);
            if targets.iter().any(|o| o.model == t.model) {
                problems.push(
                    key,
                    field("model"),
                    format!("model {:?} is listed twice in class {:?}", t.model, raw.name),
                );
                continue;
            }
            targets.push(ModelTarget {
                model: t.model.clone(),
                itl_ms,
                ttft_ms,
                itl_statistic: t.slo_tpot_statistic,
                ttft_statistic: t.slo_ttft_statistic,
            });
        }
        if let Some(first) = out.get(&raw.name) {
            problems.push(key, "name", format!("class {:?} is also defined under key {:?}", raw.name, first.key));
            continue;
        }
        out.insert(
            raw.name.clone(),
            ServiceClass { name: raw.name, priority, weight: raw.weight, targets, key: key.clone() },
        );
    }
    problems.finish(out.into_values().collect())
}

// ---------------------------------------------------------------------------------------------
// allot-config

/// Allot's settings, after defaults (WVA's controller ConfigMap, then `allot-config`).
#[derive(Clone, Debug, PartialEq)]
pub struct AllotConfig {
    /// How often a plan is made.
    pub cycle_interval: Duration,
    /// WVA's `WVA_SCALE_TO_ZERO`: the default `minReplicas` of a variant is 0 when true, else 1.
    pub scale_to_zero: bool,
    /// Unit of `accelerator-unit-costs`' `cost`.
    pub cost_unit: CostUnit,
    pub prometheus: PrometheusConfig,
    /// The scenario format's optimizer settings.
    pub optimizer: OptimizerSpec,
    /// Per accelerator name: caps and growth of the inventory.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Taint keys Allot's pods tolerate; nodes tainted NoSchedule/NoExecute with other keys are
    /// not counted.
    pub tolerated_taint_keys: Vec<String>,
    /// HPA-style damping between plan and action (`behavior.scaleUp` / `behavior.scaleDown`).
    pub behavior: Behavior,
    /// The loop's calibration, forecast, panic, scale-to-zero and schedule settings
    /// (docs/controller.md).
    pub controls: Controls,
    /// Patch each target's `scale` subresource, instead of only publishing
    /// `allot_desired_replicas` for an HPA or KEDA to act on.
    pub direct_scaling: bool,
    /// A model whose newest load sample is older than this is held.
    pub metrics_staleness: Duration,
    /// How long a type stays full after its last Unschedulable pod, unless contrary evidence
    /// arrives first; zero: only pods Unschedulable now count.
    pub full_type_memory: Duration,
}

impl Default for AllotConfig {
    fn default() -> Self {
        Self {
            cycle_interval: DEFAULT_CYCLE_INTERVAL,
            scale_to_zero: false,
            cost_unit: CostUnit::CentsPerHour,
            prometheus: PrometheusConfig::default(),
            optimizer: OptimizerSpec::default(),
            pools: BTreeMap::new(),
            tolerated_taint_keys: vec!["nvidia.com/gpu".into(), "amd.com/gpu".into()],
            behavior: Behavior::default(),
            controls: Controls::default(),
            direct_scaling: false,
            metrics_staleness: DEFAULT_METRICS_STALENESS,
            full_type_memory: DEFAULT_FULL_TYPE_MEMORY,
        }
    }
}

/// Unit of the `cost` values in `accelerator-unit-costs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostUnit {
    /// WVA's documented unit (its sample: A100 = 40.00).
    CentsPerHour,
    /// US dollars per GPU-hour.
    UsdPerHour,
}

impl CostUnit {
    pub fn to_usd_per_hour(self, cost: f64) -> f64 {
        match self {
            CostUnit::CentsPerHour => cost / 100.0,
            CostUnit::UsdPerHour => cost,
        }
    }
}

/// How to reach Prometheus.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// The gateway's queue gauge, which brings a model scaled to zero back (defaults: llm-d's
    /// Endpoint Picker flow-control queue, per `target_model_name`).
    pub gateway_queue: crate::prometheus::GatewayQueueSettings,
    /// Base URL, e.g. `https://prometheus-k8s.monitoring:9091`. Required to run the controller.
    pub url: Option<String>,
    pub tls_insecure_skip_verify: bool,
    pub ca_cert_path: Option<String>,
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
    /// TLS server name to verify instead of the URL's host.
    pub server_name: Option<String>,
    /// File holding a bearer token (mount it from a Secret).
    pub bearer_token_path: Option<String>,
    /// WVA's inline `PROMETHEUS_BEARER_TOKEN`; accepted for compatibility, prefer a file.
    pub bearer_token: Option<String>,
}

impl PrometheusConfig {
    /// Settings of the Prometheus collector ([`crate::prometheus::PrometheusCollector`]), plus notes on
    /// settings it does not support. Errors when no URL is configured anywhere.
    pub fn collector_settings(
        &self,
        staleness: Duration,
    ) -> Result<(crate::prometheus::CollectorSettings, Vec<String>), String> {
        use crate::prometheus::ClientSettings;
        use crate::prometheus::CollectorSettings;
        let Some(url) = self.url.clone() else {
            return Err("no Prometheus URL: set --prometheus-url (PROMETHEUS_URL), allot-config prometheus.url \
                        or WVA's PROMETHEUS_BASE_URL"
                .into());
        };
        let mut notes = Vec::new();
        for (set, what) in [
            (self.client_cert_path.is_some(), "client certificates (client_cert_path, client_key_path)"),
            (self.client_key_path.is_some() && self.client_cert_path.is_none(), "client_key_path"),
            (self.server_name.is_some(), "server_name"),
            (
                self.bearer_token.is_some() && self.bearer_token_path.is_none(),
                "an inline bearer token; use a token file",
            ),
        ] {
            if set {
                notes.push(format!("Prometheus: {what} is not supported and was ignored"));
            }
        }
        let client = ClientSettings {
            url,
            ca_cert_file: self.ca_cert_path.clone().map(Into::into),
            insecure_skip_verify: self.tls_insecure_skip_verify,
            bearer_token_file: self.bearer_token_path.clone().map(Into::into),
            ..ClientSettings::default()
        };
        Ok((
            CollectorSettings {
                client,
                staleness_limit: staleness,
                gateway: self.gateway_queue.clone(),
                ..CollectorSettings::default()
            },
            notes,
        ))
    }
}

/// Inventory adjustments for one accelerator.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Never plan more than this many GPUs of this accelerator, whatever nodes show.
    #[serde(default)]
    pub max_gpus: Option<u32>,
    /// GPUs a cluster autoscaler can add to this pool beyond the nodes that exist now.
    #[serde(default)]
    pub extra_gpus: u32,
    /// Pods Unschedulable for less than this are waiting for the autoscaler, not proof that
    /// the pool is full (only meaningful with `extra_gpus`).
    #[serde(default)]
    pub scale_up_grace_s: u32,
    /// Override of the price from `accelerator-unit-costs`, USD per GPU-hour.
    #[serde(default)]
    pub cost_usd_per_gpu_hour: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAllotConfig {
    #[serde(default)]
    cycle_interval: Option<String>,
    #[serde(default)]
    scale_to_zero: Option<bool>,
    #[serde(default)]
    cost_unit: Option<CostUnit>,
    #[serde(default)]
    prometheus: Option<RawPrometheus>,
    #[serde(default)]
    optimizer: Option<OptimizerSpec>,
    #[serde(default)]
    pools: BTreeMap<String, PoolConfig>,
    #[serde(default)]
    tolerated_taint_keys: Option<Vec<String>>,
    #[serde(default)]
    behavior: Option<Behavior>,
    #[serde(default)]
    controls: Option<Controls>,
    #[serde(default)]
    direct_scaling: Option<bool>,
    #[serde(default)]
    metrics_staleness: Option<String>,
    #[serde(default)]
    full_type_memory: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: Option<String>,
    tls_insecure_skip_verify: Option<bool>,
    ca_cert_path: Option<String>,
    client_cert_path: Option<String>,
    client_key_path: Option<String>,
    server_name: Option<String>,
    bearer_token_path: Option<String>,
    gateway_queue: Option<RawGatewayQueue>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGatewayQueue {
    metrics: Option<Vec<String>>,
    model_label: Option<String>,
}

/// Build Allot's settings from WVA's controller ConfigMap (when present) overlaid by
/// `allot-config` (when present). Either may be absent; the defaults are documented on
/// [`AllotConfig`].
pub fn parse_allot_config(
    defaults: &AllotConfig,
    wva_controller: Option<&BTreeMap<String, String>>,
    allot: Option<&BTreeMap<String, String>>,
) -> Result<AllotConfig, ConfigError> {
    let mut config = defaults.clone();
    let mut all = Vec::new();
    if let Some(data) = wva_controller
        && let Err(e) = apply_wva_controller(&mut config, data)
    {
        all.extend(e.problems);
    }
    if let Some(data) = allot
        && let Err(e) = apply_allot(&mut config, data)
    {
        all.extend(e.problems);
    }
    if all.is_empty() { Ok(config) } else { Err(ConfigError { problems: all }) }
}

fn apply_wva_controller(config: &mut AllotConfig, data: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let mut problems = Problems::new(WVA_CONTROLLER_CONFIG_MAP);
    let text = |key: &str| data.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()).map(str::to_string);
    if let Some(v) = text("GLOBAL_OPT_INTERVAL") {
        match parse_duration(&v) {
            Ok(d) => config.cycle_interval = d,
            Err(m) => problems.push("GLOBAL_OPT_INTERVAL", "", m),
        }
    }
    for (key, slot) in [
        ("WVA_SCALE_TO_ZERO", &mut config.scale_to_zero),
        ("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", &mut config.prometheus.tls_insecure_skip_verify),
    ] {
        if let Some(v) = text(key) {
            match v.to_ascii_lowercase().as_str() {
                "true" => *slot = true,
                "false" => *slot = false,
                _ => problems.push(key, "", format!("must be true or false, got {v:?}")),
            }
        }
    }
    let p = &mut config.prometheus;
    for (key, slot) in [
        ("PROMETHEUS_BASE_URL", &mut p.url),
        ("PROMETHEUS_CA_CERT_PATH", &mut p.ca_cert_path),
        ("PROMETHEUS_CLIENT_CERT_PATH", &mut p.client_cert_path),
        ("PROMETHEUS_CLIENT_KEY_PATH", &mut p.client_key_path),
        ("PROMETHEUS_SERVER_NAME", &mut p.server_name),
        ("PROMETHEUS_BEARER_TOKEN", &mut p.bearer_token),
        ("PROMETHEUS_BEARER_TOKEN_PATH", &mut p.bearer_token_path),
    ] {
        if let Some(v) = text(key) {
            *slot = Some(v);
        }
    }
    if let Some(url) = &config.prometheus.url {
        check_url(&mut problems, "PROMETHEUS_BASE_URL", "", url);
    }
    problems.finish(())
}

fn apply_allot(config: &mut AllotConfig, data: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let mut problems = Problems::new(ALLOT_CONFIG_MAP);
    let key = ALLOT_CONFIG_KEY;
    for other in data.keys().filter(|k| k.as_str() != key) {
        problems.push(other, "", format!("unknown key; Allot reads its settings from {key:?}"));
    }
    let Some(text) = data.get(key) else {
        return problems.finish(());
    };
    let value: serde_json::Value = match serde_saphyr::from_str::<Option<serde_json::Value>>(text) {
        Ok(v) => v.unwrap_or(serde_json::Value::Null),
        Err(e) => {
            problems.push(key, "", format!("not valid YAML: {e}"));
            return problems.finish(());
        }
    };
    let raw: RawAllotConfig = if value.is_null() {
        RawAllotConfig::default()
    } else {
        match serde_path_to_error::deserialize(value) {
            Ok(r) => r,
            Err(e) => {
                let path = e.path().to_string();
                problems.push(key, if path == "." { String::new() } else { path }, e.into_inner().to_string());
                return problems.finish(());
            }
        }
    };
    if let Some(v) = raw.cycle_interval {
        match parse_duration(&v) {
            Ok(d) => config.cycle_interval = d,
            Err(m) => problems.push(key, "cycle_interval", m),
        }
    }
    if let Some(v) = raw.scale_to_zero {
        config.scale_to_zero = v;
    }
    if let Some(v) = raw.cost_unit {
        config.cost_unit = v;
    }
    if let Some(p) = raw.prometheus {
        let c = &mut config.prometheus;
        if let Some(url) = p.url {
            check_url(&mut problems, key, "prometheus.url", &url);
            c.url = Some(url);
        }
        if let Some(v) = p.tls_insecure_skip_verify {
            c.tls_insecure_skip_verify = v;
        }
        if let Some(g) = p.gateway_queue {
            if let Some(metrics) = g.metrics {
                for (i, m) in metrics.iter().enumerate() {
                    if !crate::prometheus::is_metric_name(m) {
                        problems.push(
                            key,
                            format!("prometheus.gateway_queue.metrics[{i}]"),
                            format!("{m:?} is not a metric name"),
                        );
                    }
                }
                c.gateway_queue.metrics = metrics;
            }
            if let Some(label) = g.model_label {
                if !crate::prometheus::is_label_name(&label) {
                    problems.push(
                        key,
                        "prometheus.gateway_queue.model_label",
                        format!("{label:?} is not a label name"),
                    );
                }
                c.gateway_queue.model_label = label;
            }
        }
        for (src, dst) in [
            (p.ca_cert_path, &mut c.ca_cert_path),
            (p.client_cert_path, &mut c.client_cert_path),
            (p.client_key_path, &mut c.client_key_path),
            (p.server_name, &mut c.server_name),
            (p.bearer_token_path, &mut c.bearer_token_path),
        ] {
            if src.is_some() {
                *dst = src;
            }
        }
    }
    if let Some(o) = raw.optimizer {
        config.optimizer = o;
    }
    for (name, pool) in raw.pools {
        if let Some(c) = pool.cost_usd_per_gpu_hour
            && !(c.is_finite() && c >= 0.0)
        {
            problems.push(key, format!("pools.{name}.cost_usd_per_gpu_hour"), format!("must be a number ≥ 0, got {c}"));
        }
        config.pools.insert(name, pool);
    }
    if let Some(keys) = raw.tolerated_taint_keys {
        config.tolerated_taint_keys = keys;
    }
    if let Some(b) = raw.behavior {
        config.behavior = b;
    }
    if let Some(c) = raw.controls {
        for problem in c.problems() {
            let (field, message) = problem.split_once(": ").unwrap_or((problem.as_str(), "is invalid"));
            problems.push(key, format!("controls.{field}"), message.to_string());
        }
        config.controls = c;
    }
    if let Some(v) = raw.direct_scaling {
        config.direct_scaling = v;
    }
    if let Some(v) = raw.metrics_staleness {
        match parse_duration(&v) {
            Ok(d) => config.metrics_staleness = d,
            Err(m) => problems.push(key, "metrics_staleness", m),
        }
    }
    if let Some(v) = raw.full_type_memory {
        match v.trim() {
            "0" | "0s" => config.full_type_memory = Duration::ZERO,
            other => match parse_duration(other) {
                Ok(d) => config.full_type_memory = d,
                Err(m) => problems.push(key, "full_type_memory", format!("{m} (or 0s to turn the memory off)")),
            },
        }
    }
    problems.finish(())
}

fn check_url(problems: &mut Problems<'_>, key: &str, field: &str, url: &str) {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        problems.push(key, field, format!("must be an http:// or https:// URL, got {url:?}"));
    }
}

/// A Go-style duration: one or more `<number><unit>` with units `h`, `m`, `s`, `ms`
/// (`30s`, `1m30s`, `1.5m`). Must be at least 1 s.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("must be a duration such as 30s, 1m or 1m30s, got {text:?}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total_s = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let number: f64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(err()),
        };
        total_s += number * scale;
        rest = &rest[unit_len..];
    }
    if !(1.0..=86_400.0).contains(&total_s) {
        return Err(format!("must be between 1s and 24h, got {text:?}"));
    }
    Ok(Duration::from_secs_f64(total_s))
}

/// Everything the controller reads from ConfigMaps, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Sorted by name.
    pub accelerators: Vec<AcceleratorCost>,
    /// Sorted by name.
    pub classes: Vec<ServiceClass>,
    pub allot: AllotConfig,
}

impl ClusterConfig {
    /// Parse all ConfigMaps at once, reporting every problem. `defaults` are the settings
    /// before any ConfigMap (from the command line).
    pub fn parse(
        defaults: &AllotConfig,
        accelerator_costs: &BTreeMap<String, String>,
        service_classes: &BTreeMap<String, String>,
        wva_controller: Option<&BTreeMap<String, String>>,
        allot: Option<&BTreeMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let accelerators = parse_accelerator_costs(accelerator_costs);
        let classes = parse_service_classes(service_classes);
        let allot_config = parse_allot_config(defaults, wva_controller, allot);
        match (accelerators, classes, allot_config) {
            (Ok(accelerators), Ok(classes), Ok(allot)) => {
                let config = Self { accelerators, classes, allot };
                config.check_pools()?;
                Ok(config)
            }
            (a, c, s) => Err(ConfigError {
                problems: [a.err(), c.err(), s.err()].into_iter().flatten().flat_map(|e| e.problems).collect(),
            }),
        }
    }

    fn check_pools(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::new(ALLOT_CONFIG_MAP);
        for name in self.allot.pools.keys() {
            if !self.accelerators.iter().any(|a| &a.name == name) {
                problems.push(
                    ALLOT_CONFIG_KEY,
                    format!("pools.{name}"),
                    format!("no accelerator {name:?} in {ACCELERATOR_COSTS_CONFIG_MAP}"),
                );
            }
        }
        problems.finish(())
    }

    pub fn accelerator(&self, name: &str) -> Option<&AcceleratorCost> {
        self.accelerators.iter().find(|a| a.name == name)
    }

    /// Price of one GPU-hour in USD: the pool override, else the ConfigMap's cost in its unit.
    pub fn cost_usd_per_gpu_hour(&self, accelerator: &AcceleratorCost) -> f64 {
        self.allot
            .pools
            .get(&accelerator.name)
            .and_then(|p| p.cost_usd_per_gpu_hour)
            .unwrap_or_else(|| self.allot.cost_unit.to_usd_per_hour(accelerator.cost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// `deploy/configmap-accelerator-unitcost.yaml` of WVA (reference/wva.md §1.4).
    fn wva_costs() -> BTreeMap<String, String> {
        data(&[
            ("A100", r#"{"device": "NVIDIA-A100-PCIE-80GB", "cost": "40.00"}"#),
            ("MI300X", r#"{"device": "AMD-MI300X-192GB", "cost": "65.00"}"#),
            ("G2", r#"{"device": "Intel-Gaudi-2-96GB", "cost": "23.00"}"#),
        ])
    }

    /// `deploy/configmap-serviceclass.yaml` of WVA (reference/wva.md §1.4).
    fn wva_classes() -> BTreeMap<String, String> {
        data(&[
            (
                "premium.yaml",
                "name: Premium\npriority: 1\ndata:\n  - model: default/default\n    slo-tpot: 24\n    slo-ttft: 500\n  - model: meta/llama0-70b\n    slo-tpot: 80\n    slo-ttft: 500\n",
            ),
            (
                "freemium.yaml",
                "name: Freemium\npriority: 10\ndata:\n  - model: ibm/granite-13b\n    slo-tpot: 200\n    slo-ttft: 2000\n  - model: meta/llama0-7b\n    slo-tpot: 150\n    slo-ttft: 1500\n",
            ),
        ])
    }

    #[test]
    fn wva_sample_accelerator_costs_parse() {
        let accs = parse_accelerator_costs(&wva_costs()).expect("WVA sample parses");
        let got: Vec<(&str, &str, f64)> = accs.iter().map(|a| (a.name.as_str(), a.device.as_str(), a.cost)).collect();
        assert_eq!(
            got,
            vec![
                ("A100", "NVIDIA-A100-PCIE-80GB", 40.0),
                ("G2", "Intel-Gaudi-2-96GB", 23.0),
                ("MI300X", "AMD-MI300X-192GB", 65.0),
            ]
        );
        assert_eq!(CostUnit::CentsPerHour.to_usd_per_hour(40.0), 0.4);
    }

    #[test]
    fn wva_sample_service_classes_parse() {
        let classes = parse_service_classes(&wva_classes()).expect("WVA sample parses");
        assert_eq!(classes.len(), 2);
        let (free, premium) = (&classes[0], &classes[1]);
        assert_eq!((free.name.as_str(), free.priority, free.key.as_str()), ("Freemium", 10, "freemium.yaml"));
        assert_eq!((premium.name.as_str(), premium.priority), ("Premium", 1));
        assert_eq!(premium.targets[1].model, "meta/llama0-70b");
        assert_eq!((premium.targets[1].itl_ms, premium.targets[1].ttft_ms), (Some(80.0), Some(500.0)));
        assert_eq!(
            (free.targets[0].model.as_str(), free.targets[0].itl_ms, free.targets[0].ttft_ms),
            ("ibm/granite-13b", Some(200.0), Some(2000.0))
        );
        assert_eq!(free.targets[1].ttft_statistic, Statistic::Mean);
    }

    #[test]
    fn priority_outside_1_to_100_becomes_100_like_wva() {
        for p in ["0", "-3", "101", "100000"] {
            let d = data(&[("x.yaml", &format!("name: X\npriority: {p}\ndata:\n  - {{model: m, slo-ttft: 100}}\n"))]);
            assert_eq!(parse_service_classes(&d).expect("parses")[0].priority, 100, "priority {p}");
        }
        let d = data(&[("x.yaml", "name: X\npriority: 100\ndata: []\n")]);
        assert_eq!(parse_service_classes(&d).expect("parses")[0].priority, 100);
    }

    #[test]
    fn bad_cost_names_config_map_key_and_field() {
        let d = data(&[("H100", r#"{"device": "NVIDIA-H100-80GB-HBM3", "cost": "cheap"}"#)]);
        let err = parse_accelerator_costs(&d).expect_err("cost is not a number");
        assert_eq!(err.problems[0].field, "cost");
        assert_eq!(
            err.to_string(),
            "invalid configuration:\n  ConfigMap accelerator-unit-costs, key \"H100\", field cost: must be a decimal number ≥ 0, got \"cheap\""
        );
        let d = data(&[("H100", "not json")]);
        assert!(parse_accelerator_costs(&d).expect_err("not JSON").to_string().contains("key \"H100\""));
        let d = data(&[("H100", r#"{"device": "X", "cost": "-1"}"#)]);
        assert!(parse_accelerator_costs(&d).is_err());
    }

    #[test]
    fn two_names_for_one_device_are_refused() {
        let d = data(&[("A", r#"{"device": "D", "cost": "1"}"#), ("B", r#"{"device": "D", "cost": "2"}"#)]);
        let err = parse_accelerator_costs(&d).expect_err("duplicate device");
        assert_eq!((err.problems[0].key.as_str(), err.problems[0].field.as_str()), ("B", "device"));
    }

    #[test]
    fn bad_service_class_values_name_the_field() {
        let d = data(&[("a.yaml", "name: A\npriority: 1\ndata:\n  - {model: m, slo-tpot: -5, slo-ttft: 10}\n")]);
        let err = parse_service_classes(&d).expect_err("negative target");
        assert_eq!((err.problems[0].key.as_str(), err.problems[0].field.as_str()), ("a.yaml", "data[0].slo-tpot"));
        let d = data(&[("a.yaml", "name: A\npriority: high\n")]);
        assert!(parse_service_classes(&d).expect_err("priority not a number").to_string().contains("key \"a.yaml\""));
        let d = data(&[("a.yaml", "name: A\npriority: 1\n"), ("b.yaml", "name: A\npriority: 2\n")]);
        assert_eq!(parse_service_classes(&d).expect_err("duplicate class").problems[0].key, "b.yaml");
    }

    #[test]
    fn defaults_without_any_config_map() {
        let c = parse_allot_config(&AllotConfig::default(), None, None).expect("defaults");
        assert_eq!(c.cycle_interval, Duration::from_secs(30));
        assert!(!c.scale_to_zero);
        assert_eq!(c.optimizer, OptimizerSpec::default());
        assert_eq!(c.prometheus.url, None);
    }

    #[test]
    fn wva_controller_config_map_gives_defaults_that_allot_config_overrides() {
        let wva = data(&[
            ("GLOBAL_OPT_INTERVAL", "60s"),
            ("WVA_SCALE_TO_ZERO", "true"),
            ("PROMETHEUS_BASE_URL", "https://prometheus:9090"),
            ("PROMETHEUS_TLS_INSECURE_SKIP_VERIFY", "true"),
        ]);
        let only_wva = parse_allot_config(&AllotConfig::default(), Some(&wva), None).expect("WVA keys parse");
        assert_eq!(only_wva.cycle_interval, Duration::from_secs(60));
        assert!(only_wva.scale_to_zero && only_wva.prometheus.tls_insecure_skip_verify);
        assert_eq!(only_wva.prometheus.url.as_deref(), Some("https://prometheus:9090"));

        let allot = data(&[(
            ALLOT_CONFIG_KEY,
            r#"
cycle_interval: 1m30s
cost_unit: usd_per_hour
prometheus:
  url: https://thanos-querier.openshift-monitoring:9091
  ca_cert_path: /etc/allot/ca.crt
  bearer_token_path: /var/run/secrets/allot/token
optimizer:
  time_limit_s: 5
  mip_gap: 0.02
  transition: { replica_change_fraction: 0.2, accelerator_move_fraction: 0.3 }
pools:
  A100: { max_gpus: 16, extra_gpus: 8, scale_up_grace_s: 300 }
tolerated_taint_keys: [nvidia.com/gpu, dedicated]
"#,
        )]);
        let c = parse_allot_config(&AllotConfig::default(), Some(&wva), Some(&allot)).expect("allot-config parses");
        assert_eq!(c.cycle_interval, Duration::from_secs(90));
        assert!(c.scale_to_zero, "kept from WVA's ConfigMap");
        assert_eq!(c.cost_unit, CostUnit::UsdPerHour);
        assert_eq!(c.prometheus.url.as_deref(), Some("https://thanos-querier.openshift-monitoring:9091"));
        assert!(c.prometheus.tls_insecure_skip_verify, "kept from WVA's ConfigMap");
        assert_eq!(c.prometheus.bearer_token_path.as_deref(), Some("/var/run/secrets/allot/token"));
        assert_eq!((c.optimizer.time_limit_s, c.optimizer.mip_gap), (5.0, 0.02));
        assert_eq!(c.optimizer.max_utilization, OptimizerSpec::default().max_utilization);
        assert_eq!(c.optimizer.transition.accelerator_move_fraction, 0.3);
        assert_eq!(
            c.pools["A100"],
            PoolConfig { max_gpus: Some(16), extra_gpus: 8, scale_up_grace_s: 300, cost_usd_per_gpu_hour: None }
        );
        assert_eq!(c.tolerated_taint_keys, vec!["nvidia.com/gpu", "dedicated"]);
    }

    #[test]
    fn bad_allot_config_names_the_field() {
        let cases = [
            ("optimizer:\n  mip_gapp: 0.1\n", "optimizer"),
            ("optimizer:\n  mip_gap: lots\n", "optimizer.mip_gap"),
            ("cycle_interval: soon\n", "cycle_interval"),
            ("prometheus:\n  url: prometheus:9090\n", "prometheus.url"),
            ("pools:\n  A100: { max_gpus: -1 }\n", "pools.A100.max_gpus"),
        ];
        for (yaml, field) in cases {
            let err = parse_allot_config(&AllotConfig::default(), None, Some(&data(&[(ALLOT_CONFIG_KEY, yaml)])))
                .expect_err(yaml);
            let p = &err.problems[0];
            assert_eq!((p.config_map.as_str(), p.key.as_str()), (ALLOT_CONFIG_MAP, ALLOT_CONFIG_KEY), "{yaml}");
            assert!(p.field.starts_with(field), "{yaml}: field {:?} should start with {field:?}", p.field);
        }
        let err = parse_allot_config(&AllotConfig::default(), None, Some(&data(&[("settings.yaml", "")])))
            .expect_err("wrong key");
        assert_eq!(err.problems[0].key, "settings.yaml");
        let err = parse_allot_config(&AllotConfig::default(), Some(&data(&[("GLOBAL_OPT_INTERVAL", "often")])), None)
            .expect_err("bad duration");
        assert_eq!(
            (err.problems[0].config_map.as_str(), err.problems[0].key.as_str()),
            (WVA_CONTROLLER_CONFIG_MAP, "GLOBAL_OPT_INTERVAL")
        );
    }

    #[test]
    fn behavior_direct_scaling_and_staleness_parse_with_hpa_field_names() {
        let allot = data(&[(
            ALLOT_CONFIG_KEY,
            r#"
direct_scaling: true
metrics_staleness: 5m
full_type_memory: 15m
behavior:
  scaleUp:
    stabilizationWindowSeconds: 60
    policies: [{type: Pods, value: 2, periodSeconds: 30}]
  scaleDown:
    stabilizationWindowSeconds: 600
    selectPolicy: Disabled
"#,
        )]);
        let c = parse_allot_config(&AllotConfig::default(), None, Some(&allot)).expect("parses");
        assert!(c.direct_scaling);
        assert_eq!(c.metrics_staleness, Duration::from_secs(300));
        assert_eq!(c.full_type_memory, Duration::from_secs(900));
        assert_eq!(AllotConfig::default().full_type_memory, Duration::from_secs(600));
        let off = data(&[(ALLOT_CONFIG_KEY, "full_type_memory: 0s\n")]);
        assert_eq!(
            parse_allot_config(&AllotConfig::default(), None, Some(&off)).expect("0s").full_type_memory,
            Duration::ZERO
        );
        assert_eq!(c.behavior.scale_up.stabilization_window_seconds, 60);
        assert_eq!(c.behavior.scale_up.policies.len(), 1);
        assert_eq!(c.behavior.scale_up.policies[0].value, 2);
        assert_eq!(c.behavior.scale_down.stabilization_window_seconds, 600);
        assert_eq!(c.behavior.scale_down.select_policy, crate::controller::stabilize::SelectPolicy::Disabled);

        // Defaults come from the command line when the ConfigMap is silent.
        let defaults =
            AllotConfig { direct_scaling: true, cycle_interval: Duration::from_secs(10), ..Default::default() };
        let c = parse_allot_config(&defaults, None, None).expect("defaults");
        assert!(c.direct_scaling);
        assert_eq!(c.cycle_interval, Duration::from_secs(10));
        assert_eq!(c.behavior, Behavior::default());

        for (yaml, field) in [
            ("behavior:\n  scaleUp:\n    stabilizationWindowSecond: 1\n", "behavior.scaleUp"),
            ("metrics_staleness: never\n", "metrics_staleness"),
            ("full_type_memory: forever\n", "full_type_memory"),
            ("direct_scaling: sometimes\n", "direct_scaling"),
        ] {
            let err = parse_allot_config(&AllotConfig::default(), None, Some(&data(&[(ALLOT_CONFIG_KEY, yaml)])))
                .expect_err(yaml);
            assert!(err.problems[0].field.starts_with(field), "{yaml}: {:?}", err.problems[0]);
        }
    }

    #[test]
    fn the_gateway_queue_gauge_is_configurable_and_checked() {
        let yaml = "prometheus:\n  gateway_queue:\n    metrics: [my_gateway_queue]\n    model_label: model\n";
        let c =
            parse_allot_config(&AllotConfig::default(), None, Some(&data(&[(ALLOT_CONFIG_KEY, yaml)]))).expect("valid");
        assert_eq!(c.prometheus.gateway_queue.metrics, vec!["my_gateway_queue".to_string()]);
        assert_eq!(c.prometheus.gateway_queue.model_label, "model");
        let defaults = AllotConfig::default().prometheus.gateway_queue;
        assert_eq!(defaults.metrics[0], "llm_d_epp_flow_control_queue_size", "llm-d's Endpoint Picker by default");
        let settings = PrometheusConfig { url: Some("http://p:9090".into()), ..c.prometheus.clone() }
            .collector_settings(DEFAULT_METRICS_STALENESS)
            .expect("valid")
            .0;
        assert_eq!(settings.gateway.model_label, "model");
        for (yaml, field) in [
            ("prometheus:\n  gateway_queue:\n    metrics: [\"a b\"]\n", "prometheus.gateway_queue.metrics[0]"),
            ("prometheus:\n  gateway_queue:\n    model_label: \"x:y\"\n", "prometheus.gateway_queue.model_label"),
            ("prometheus:\n  gateway_queue:\n    metric: x\n", "config.yaml"),
        ] {
            let err = parse_allot_config(&AllotConfig::default(), None, Some(&data(&[(ALLOT_CONFIG_KEY, yaml)])))
                .expect_err(yaml);
            assert!(
                err.problems.iter().any(|p| p.field.starts_with(field) || p.message.contains("metric")),
                "{yaml}: {:?}",
                err.problems
            );
        }
    }

    #[test]
    fn prometheus_settings_become_collector_settings() {
        assert!(PrometheusConfig::default().collector_settings(DEFAULT_METRICS_STALENESS).is_err(), "a URL is needed");
        let p = PrometheusConfig {
            url: Some("https://thanos:9091".into()),
            ca_cert_path: Some("/etc/allot/ca.crt".into()),
            bearer_token_path: Some("/var/run/secrets/token".into()),
            server_name: Some("thanos.svc".into()),
            ..PrometheusConfig::default()
        };
        let (settings, notes) = p.collector_settings(Duration::from_secs(90)).expect("valid");
        assert_eq!(settings.client.url, "https://thanos:9091");
        assert_eq!(settings.client.ca_cert_file.as_deref(), Some(std::path::Path::new("/etc/allot/ca.crt")));
        assert_eq!(settings.client.bearer_token_file.as_deref(), Some(std::path::Path::new("/var/run/secrets/token")));
        assert_eq!(settings.staleness_limit, Duration::from_secs(90));
        assert_eq!(notes, vec!["Prometheus: server_name is not supported and was ignored"]);
    }

    #[test]
    fn pools_must_name_a_configured_accelerator() {
        let allot = data(&[(ALLOT_CONFIG_KEY, "pools:\n  H200: { max_gpus: 8 }\n")]);
        let err = ClusterConfig::parse(&AllotConfig::default(), &wva_costs(), &wva_classes(), None, Some(&allot))
            .expect_err("unknown pool");
        assert_eq!(err.problems[0].field, "pools.H200");
        let ok = ClusterConfig::parse(&AllotConfig::default(), &wva_costs(), &wva_classes(), None, None)
            .expect("WVA samples parse");
        let a100 = ok.accelerator("A100").expect("configured");
        assert_eq!(ok.cost_usd_per_gpu_hour(a100), 0.4);
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "30", "s", "30x", "0s", "500ms", "-1s", "1..5s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
