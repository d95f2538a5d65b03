//! Allot's own Prometheus metrics (OpenMetrics names with units), set from each cycle's
//! observation and decision. Label sets are small and bounded by the fleet: variants, models ×
//! classes, accelerator types and a few fixed enumerations. Per-fleet families are cleared and
//! refilled every cycle so deleted variants disappear instead of freezing at their last value.
//! The names are the contract of `deploy/prometheus/` and `deploy/grafana/` (docs/dashboards.md).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::vllm;
use crate::controller::{Applied, ClusterError, Decision, Observed};
use crate::plan::{PlanMode, PlanStatus};

type FGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantLabels {
    pub namespace: String,
    pub variant: String,
    pub model: String,
    pub accelerator: String,
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PendingLabels {
    pub namespace: String,
    pub variant: String,
    pub model: String,
    pub accelerator: String,
    pub role: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantClassLabels {
    pub namespace: String,
    pub variant: String,
    pub model: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelClassLabels {
    pub model: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub model: String,
    pub class: String,
    pub metric: String,
}

/// Joins vLLM's histogram buckets (`model_name`, `le`) with a class's target.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetBucketLabels {
    pub model_name: String,
    pub class: String,
    pub metric: String,
    pub le: String,
}

/// A variant's latency model against what its servers measured (`metric`: ttft, itl; `part`
/// of a correction: prefill, decode).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantMetricLabels {
    pub namespace: String,
    pub variant: String,
    pub metric: String,
}

/// One model's load forecast (`kind`: expected, lower, upper, planned).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForecastLabels {
    pub model: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabels {
    pub accelerator: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// The attainment a class's SLO asks for: the quantile of its strictest statistic (0.5 for a
/// mean target); `None` without targets. `allot_slo_objective_ratio` and the console's history.
pub fn objective_ratio(slo: &crate::analyze::capacity::Slo) -> Option<f64> {
    [slo.ttft, slo.itl].into_iter().flatten().map(|t| t.statistic.quantile().unwrap_or(0.5)).reduce(f64::max)
}

/// Every metric Allot exports, registered once.
pub struct Metrics {
    registry: Registry,
    desired: Family<VariantLabels, Gauge>,
    planned: Family<VariantLabels, Gauge>,
    current: Family<VariantLabels, Gauge>,
    ready: Family<VariantLabels, Gauge>,
    pending: Family<PendingLabels, Gauge>,
    predicted_ttft: Family<VariantClassLabels, FGauge>,
    predicted_itl: Family<VariantClassLabels, FGauge>,
    predicted_met: Family<VariantClassLabels, Gauge>,
    model_error: Family<VariantMetricLabels, FGauge>,
    model_correction: Family<VariantMetricLabels, FGauge>,
    calibration_confidence: Family<VariantLabels, FGauge>,
    model_drift: Family<VariantLabels, Gauge>,
    forecast: Family<ForecastLabels, FGauge>,
    forecast_horizon: Family<ModelLabels, FGauge>,
    panic: Family<ModelLabels, Gauge>,
    demand: Family<ModelClassLabels, FGauge>,
    served: Family<ModelClassLabels, FGauge>,
    unmet: Family<ModelClassLabels, FGauge>,
    predicted_attainment: Family<ModelClassLabels, FGauge>,
    objective: Family<ModelClassLabels, FGauge>,
    target: Family<TargetLabels, FGauge>,
    target_bucket: Family<TargetBucketLabels, Gauge>,
    cost: Family<KindLabels, FGauge>,
    gpus: Family<GpuLabels, Gauge>,
    plan_duration: Histogram,
    solver_time: FGauge,
    solver_gap: FGauge,
    solver_status: Family<StatusLabels, Gauge>,
    plans: Family<StatusLabels, Counter>,
    plan_changes: Counter,
    fair_share: Gauge,
    last_plan: FGauge,
    metric_age: Family<ModelLabels, FGauge>,
    metric_stale: Family<ModelLabels, Gauge>,
    actuation_errors: Family<KindLabels, Counter>,
    observe_errors: Family<KindLabels, Counter>,
    configured: Gauge,
    cycles: Family<OutcomeLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        macro_rules! reg {
            ($name:literal, $help:literal, $metric:expr) => {{
                let m = $metric;
                r.register($name, $help, m.clone());
                m
            }};
        }
        Self {
            desired: reg!(
                "allot_desired_replicas",
                "Replicas Allot wants per variant (after stabilization); HPA/KEDA target",
                Family::default()
            ),
            planned: reg!(
                "allot_planned_replicas",
                "Replicas the optimizer planned per variant, before stabilization",
                Family::default()
            ),
            current: reg!(
                "allot_current_replicas",
                "Replicas holding GPUs per variant (ready + booting)",
                Family::default()
            ),
            ready: reg!("allot_ready_replicas", "Ready replicas per variant", Family::default()),
            pending: reg!(
                "allot_pending_replicas",
                "Replicas not serving per variant, by reason (booting, unschedulable, gated)",
                Family::default()
            ),
            predicted_ttft: reg!(
                "allot_predicted_ttft_seconds",
                "Predicted TTFT of each class on a variant, at the class's statistic",
                Family::default()
            ),
            predicted_itl: reg!(
                "allot_predicted_itl_seconds",
                "Predicted ITL of each class on a variant, at the class's statistic",
                Family::default()
            ),
            predicted_met: reg!(
                "allot_predicted_slo_met",
                "Whether the variant is predicted to meet the class's SLO (1) or not (0)",
                Family::default()
            ),
            model_error: reg!(
                "allot_model_error_ratio",
                "Observed over predicted latency per variant and metric (ttft, itl), with the profile as given, at the observed load",
                Family::default()
            ),
            model_correction: reg!(
                "allot_model_correction_ratio",
                "Calibration factor in use on a variant's profile, per part (prefill: gamma, delta, epsilon; decode: alpha, beta, eta)",
                Family::default()
            ),
            calibration_confidence: reg!(
                "allot_model_calibration_confidence_ratio",
                "How much evidence a variant's calibration rests on (0 to 1)",
                Family::default()
            ),
            model_drift: reg!(
                "allot_model_drift",
                "1 while a variant's correction is beyond the drift threshold with enough confidence (the ModelDrift condition): its profile no longer describes its servers",
                Family::default()
            ),
            forecast: reg!(
                "allot_forecast_requests_per_second",
                "Load forecast per model at the time a replica started now is ready: expected, lower and upper bound, and what the plan sized for",
                Family::default()
            ),
            forecast_horizon: reg!(
                "allot_forecast_horizon_seconds",
                "How far ahead the forecast looks per model (start-up + interval + metric age)",
                Family::default()
            ),
            panic: reg!(
                "allot_panic",
                "1 while a model is in panic mode (observed latency far over its SLO: no scale-down, no windows)",
                Family::default()
            ),
            demand: reg!("allot_demand_requests_per_second", "Observed demand per model and class", Family::default()),
            served: reg!(
                "allot_served_ratio",
                "Share of the demand the plan serves per model and class",
                Family::default()
            ),
            unmet: reg!(
                "allot_unmet_demand_requests_per_second",
                "Demand the plan cannot serve per model and class",
                Family::default()
            ),
            predicted_attainment: reg!(
                "allot_predicted_slo_attainment_ratio",
                "Share of demand planned onto variants predicted to meet the SLO",
                Family::default()
            ),
            objective: reg!(
                "allot_slo_objective_ratio",
                "Attainment objective per model and class (the SLO statistic's quantile; 0.5 for mean targets)",
                Family::default()
            ),
            target: reg!(
                "allot_slo_target_seconds",
                "Latency target per model, class and metric (ttft, itl)",
                Family::default()
            ),
            target_bucket: reg!(
                "allot_slo_target_bucket_info",
                "The vLLM histogram bucket (le) at or below each target, for attainment rules",
                Family::default()
            ),
            cost: reg!(
                "allot_cost_dollars_per_hour",
                "Hourly cost of the planned and the current replicas",
                Family::default()
            ),
            gpus: reg!(
                "allot_gpus",
                "GPUs per accelerator type: available, used (planned), free, pending (unschedulable pods)",
                Family::default()
            ),
            plan_duration: reg!(
                "allot_plan_duration_seconds",
                "Wall time of a cycle from observation to decision",
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            ),
            solver_time: reg!("allot_solver_time_seconds", "Solver time of the latest plan", FGauge::default()),
            solver_gap: reg!(
                "allot_solver_gap_ratio",
                "Relative MIP gap of the latest plan's final phase",
                FGauge::default()
            ),
            solver_status: reg!(
                "allot_solver_status",
                "Outcome of the latest plan (1 on the current status)",
                Family::default()
            ),
            plans: reg!("allot_plans", "Plans computed, by status", Family::default()),
            plan_changes: reg!(
                "allot_plan_changes",
                "Plans whose desired replicas differ from the previous plan's",
                Counter::default()
            ),
            fair_share: reg!(
                "allot_fair_share_active",
                "1 while GPUs ran out and demand is shared by priority",
                Gauge::default()
            ),
            last_plan: reg!("allot_last_plan_timestamp_seconds", "Unix time of the latest plan", FGauge::default()),
            metric_age: reg!("allot_metric_age_seconds", "Age of the newest load sample per model", Family::default()),
            metric_stale: reg!(
                "allot_metric_stale",
                "1 while a model's load metrics are missing or stale (its variants are held)",
                Family::default()
            ),
            actuation_errors: reg!(
                "allot_actuation_errors",
                "Failed actuations (status, scale, event)",
                Family::default()
            ),
            observe_errors: reg!(
                "allot_observe_errors",
                "Cycles whose observation failed, by kind (not_configured, not_synced, unavailable, forbidden, invalid_snapshot)",
                Family::default()
            ),
            configured: reg!(
                "allot_configured",
                "1 while the configuration (ConfigMaps, Prometheus) is usable; 0: running without acting",
                Gauge::default()
            ),
            cycles: reg!("allot_cycles", "Controller cycles by outcome", Family::default()),
            leader: reg!("allot_leader", "1 while this replica holds the lease and acts", Gauge::default()),
            registry: r,
        }
        .initialize_counters()
    }

    /// Counters with a known, fixed label set start at 0 so rates and alerts see them before the
    /// first event (a missing series is not a zero to PromQL).
    fn initialize_counters(self) -> Self {
        for kind in ["status", "scale", "event", "not_observed"] {
            let _ = self.actuation_errors.get_or_create(&KindLabels { kind: kind.to_string() });
        }
        for kind in ["not_configured", "not_synced", "unavailable", "forbidden", "invalid_snapshot", "nothing_to_plan"]
        {
            let _ = self.observe_errors.get_or_create(&KindLabels { kind: kind.to_string() });
        }
        for outcome in [
            "applied",
            "applied_with_errors",
            "planned_as_follower",
            "observe_error",
            "not_configured",
            "not_synced",
            "nothing_to_plan",
            "plan_error",
        ] {
            let _ = self.cycles.get_or_create(&OutcomeLabels { outcome: outcome.to_string() });
        }
        for status in ["optimal", "gap_limit", "work_limit", "time_limit", "fallback"] {
            let _ = self.plans.get_or_create(&StatusLabels { status: status.to_string() });
        }
        self
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn record_cycle(&self, outcome: &str) {
        self.cycles.get_or_create(&OutcomeLabels { outcome: outcome.to_string() }).inc();
    }

    pub fn record_applied(&self, applied: &Applied) {
        for (_, error) in &applied.errors {
            self.actuation_errors.get_or_create(&KindLabels { kind: error.metric_label().to_string() }).inc();
        }
    }

    /// A cycle whose observation failed, by the error's kind.
    pub fn record_observe_error(&self, error: &ClusterError) {
        self.observe_errors.get_or_create(&KindLabels { kind: error.metric_label().to_string() }).inc();
    }

    /// Whether the cluster's configuration is usable (`allot_configured`): 0 while the controller
    /// runs without acting because its ConfigMaps are missing or invalid.
    pub fn set_configured(&self, configured: bool) {
        self.configured.set(i64::from(configured));
    }

    /// Set every per-fleet metric from one cycle.
    pub fn record_decision(&self, observed: &Observed, decision: &Decision, elapsed_s: f64) {
        let snapshot = &observed.snapshot;
        let plan = &decision.plan;
        for family in [&self.desired, &self.planned, &self.current, &self.ready] {
            family.clear();
        }
        self.pending.clear();
        let mut pending_gpus: BTreeMap<&str, i64> = BTreeMap::new();
        for v in &decision.variants {
            let (namespace, name) = v.namespace_and_name();
            let labels = VariantLabels {
                namespace: namespace.to_string(),
                variant: name.to_string(),
                model: v.model.clone(),
                accelerator: v.accelerator.clone(),
                role: v.role.as_str().to_string(),
            };
            self.desired.get_or_create(&labels).set(i64::from(v.desired));
            self.planned.get_or_create(&labels).set(i64::from(v.planned));
            self.current.get_or_create(&labels).set(i64::from(v.current));
            self.ready.get_or_create(&labels).set(i64::from(v.pods.ready));
            for (reason, n) in
                [("booting", v.pods.booting), ("unschedulable", v.pods.unschedulable), ("gated", v.pods.gated)]
            {
                let l = PendingLabels {
                    namespace: labels.namespace.clone(),
                    variant: labels.variant.clone(),
                    model: labels.model.clone(),
                    accelerator: labels.accelerator.clone(),
                    role: labels.role.clone(),
                    reason: reason.to_string(),
                };
                self.pending.get_or_create(&l).set(i64::from(n));
            }
            if let Ok(i) = snapshot.variants.binary_search_by(|s| s.name.cmp(&v.name)) {
                *pending_gpus.entry(v.accelerator.as_str()).or_default() +=
                    i64::from(v.pods.unschedulable) * i64::from(snapshot.variants[i].gpus_per_replica);
            }
        }

        // Calibration: the model's error with the profile as given and the correction in use.
        self.model_error.clear();
        self.model_correction.clear();
        self.calibration_confidence.clear();
        self.model_drift.clear();
        for v in &decision.variants {
            let Some(c) = &v.calibration else { continue };
            let (namespace, name) = v.namespace_and_name();
            let labels = |metric: &str| VariantMetricLabels {
                namespace: namespace.to_string(),
                variant: name.to_string(),
                metric: metric.to_string(),
            };
            for (metric, ratio) in [("ttft", c.ttft_error_ratio), ("itl", c.itl_error_ratio)] {
                if let Some(r) = ratio.filter(|r| r.is_finite()) {
                    self.model_error.get_or_create(&labels(metric)).set(r);
                }
            }
            self.model_correction.get_or_create(&labels("prefill")).set(c.prefill_factor);
            self.model_correction.get_or_create(&labels("decode")).set(c.decode_factor);
            let l = VariantLabels {
                namespace: namespace.to_string(),
                variant: name.to_string(),
                model: v.model.clone(),
                accelerator: v.accelerator.clone(),
                role: v.role.as_str().to_string(),
            };
            self.calibration_confidence.get_or_create(&l).set(c.confidence);
            self.model_drift.get_or_create(&l).set(i64::from(c.drift));
        }
        self.forecast.clear();
        self.forecast_horizon.clear();
        for (model, f) in &decision.forecasts {
            for (kind, rps) in [
                ("expected", f.expected_rps),
                ("lower", f.lower_rps),
                ("upper", f.upper_rps),
                ("planned", f.planned_rps),
            ] {
                self.forecast.get_or_create(&ForecastLabels { model: model.clone(), kind: kind.to_string() }).set(rps);
            }
            self.forecast_horizon.get_or_create(&ModelLabels { model: model.clone() }).set(f.horizon_s);
        }
        self.panic.clear();
        for model in &snapshot.models {
            let on = decision.panic.contains_key(&model.name);
            self.panic.get_or_create(&ModelLabels { model: model.name.clone() }).set(i64::from(on));
        }

        // Predictions per variant and class, and the share of each demand planned onto variants
        // predicted to meet its SLO.
        for family in [&self.predicted_ttft, &self.predicted_itl] {
            family.clear();
        }
        self.predicted_met.clear();
        for vp in &plan.variants {
            let Some(prediction) = &vp.predicted else { continue };
            let (namespace, name) = crate::controller::namespace_and_name(&vp.name);
            for check in &prediction.slo {
                let labels = VariantClassLabels {
                    namespace: namespace.to_string(),
                    variant: name.to_string(),
                    model: vp.model.clone(),
                    class: check.class.clone(),
                };
                let ttft_ms = check.ttft.as_ref().map(|t| t.predicted_ms).or(prediction.ttft_ms);
                let itl_ms = check.itl.as_ref().map(|t| t.predicted_ms).or(prediction.itl_ms);
                if let Some(ms) = ttft_ms.filter(|x| x.is_finite()) {
                    self.predicted_ttft.get_or_create(&labels).set(ms / 1e3);
                }
                if let Some(ms) = itl_ms.filter(|x| x.is_finite()) {
                    self.predicted_itl.get_or_create(&labels).set(ms / 1e3);
                }
                self.predicted_met.get_or_create(&labels).set(i64::from(check.met));
            }
        }

        for family in [&self.demand, &self.served, &self.unmet, &self.predicted_attainment, &self.objective] {
            family.clear();
        }
        let attainment = plan.predicted_attainment();
        for m in &plan.models {
            let labels = ModelClassLabels { model: m.name.clone(), class: m.class.clone() };
            self.demand.get_or_create(&labels).set(m.demand_rps);
            self.served.get_or_create(&labels).set(m.served_fraction);
            self.unmet.get_or_create(&labels).set(m.unmet_rps);
            let share = attainment.get(&(m.name.clone(), m.class.clone())).copied().unwrap_or(1.0);
            self.predicted_attainment.get_or_create(&labels).set(share);
        }

        // Targets, objectives and the bucket each target falls on.
        self.target.clear();
        self.target_bucket.clear();
        for model in &snapshot.models {
            for demand in &model.demands {
                let class = &snapshot.classes[demand.class].name;
                for (metric, target, buckets) in
                    [("ttft", demand.slo.ttft, vllm::TTFT_BUCKETS_S), ("itl", demand.slo.itl, vllm::ITL_BUCKETS_S)]
                {
                    let Some(target) = target else { continue };
                    let t =
                        TargetLabels { model: model.name.clone(), class: class.clone(), metric: metric.to_string() };
                    self.target.get_or_create(&t).set(target.ms / 1e3);
                    let b = TargetBucketLabels {
                        model_name: model.name.clone(),
                        class: class.clone(),
                        metric: metric.to_string(),
                        le: vllm::format_le(vllm::bucket_at_or_below(buckets, target.ms / 1e3)),
                    };
                    self.target_bucket.get_or_create(&b).set(1);
                }
                if let Some(objective) = objective_ratio(&demand.slo) {
                    let labels = ModelClassLabels { model: model.name.clone(), class: class.clone() };
                    self.objective.get_or_create(&labels).set(objective);
                }
            }
        }

        self.cost.clear();
        self.cost.get_or_create(&KindLabels { kind: "planned".into() }).set(plan.cost_usd_per_hour);
        self.cost.get_or_create(&KindLabels { kind: "current".into() }).set(plan.current_cost_usd_per_hour);
        self.gpus.clear();
        for a in &plan.accelerators {
            let pending = pending_gpus.get(a.name.as_str()).copied().unwrap_or(0);
            for (state, n) in [
                ("available", i64::from(a.available_gpus)),
                ("used", i64::from(a.used_gpus)),
                ("free", i64::from(a.free_gpus)),
                ("pending", pending),
            ] {
                self.gpus.get_or_create(&GpuLabels { accelerator: a.name.clone(), state: state.to_string() }).set(n);
            }
        }

        self.plan_duration.observe(elapsed_s);
        self.solver_time.set(plan.solve_ms / 1e3);
        self.solver_gap.set(plan.mip_gap);
        let status = status_name(plan.status);
        for s in [
            PlanStatus::Optimal,
            PlanStatus::GapLimit,
            PlanStatus::WorkLimit,
            PlanStatus::TimeLimit,
            PlanStatus::Fallback,
        ] {
            let name = status_name(s);
            self.solver_status.get_or_create(&StatusLabels { status: name.to_string() }).set(i64::from(name == status));
        }
        self.plans.get_or_create(&StatusLabels { status: status.to_string() }).inc();
        if decision.changed {
            self.plan_changes.inc();
        }
        self.fair_share.set(i64::from(plan.mode == PlanMode::FairShare));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.last_plan.set(now);

        self.metric_age.clear();
        self.metric_stale.clear();
        for model in &snapshot.models {
            let labels = ModelLabels { model: model.name.clone() };
            if let Some(age) = observed.metric_age_s.get(&model.name) {
                self.metric_age.get_or_create(&labels).set(*age);
            }
            self.metric_stale.get_or_create(&labels).set(i64::from(observed.stale_models.contains_key(&model.name)));
        }
    }
}

fn status_name(status: PlanStatus) -> &'static str {
    match status {
        PlanStatus::Optimal => "optimal",
        PlanStatus::GapLimit => "gap_limit",
        PlanStatus::WorkLimit => "work_limit",
        PlanStatus::TimeLimit => "time_limit",
        PlanStatus::Fallback => "fallback",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::observed;
    use crate::controller::{Memory, decide};

    fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn the_model_error_the_correction_and_the_forecast_are_exported() {
        use crate::controller::evidence::{LatencySummary, ServedStats};
        let metrics = Metrics::new();
        let mut obs = observed(8.0, 2, 0, 0.0);
        // The H100 servers measured twice the latency any profile would promise at 2 req/s.
        let stats = ServedStats {
            window_s: 60.0,
            ready_replicas: 2.0,
            arrival_rps: 4.0,
            completion_rps: 4.0,
            finished: 240,
            input_tokens: Some(1155.0),
            output_tokens: Some(211.0),
            ttft: Some(LatencySummary { mean_ms: 3000.0, ..LatencySummary::default() }),
            itl: Some(LatencySummary { mean_ms: 90.0, ..LatencySummary::default() }),
            ..ServedStats::default()
        };
        obs.evidence.served.insert("ns/chat-h100".into(), stats);
        let decision = decide(&obs, None, &mut Memory::default(), 1);
        metrics.record_decision(&obs, &decision, 0.02);
        let text = metrics.encode();
        let errors = lines(&text, "allot_model_error_ratio{");
        assert_eq!(errors.len(), 2, "{text}");
        for metric in ["ttft", "itl"] {
            let line = errors.iter().find(|l| l.contains(&format!("metric=\"{metric}\""))).expect("one per metric");
            assert!(line.contains("variant=\"chat-h100\""), "{line}");
            let ratio: f64 = line.rsplit(' ').next().and_then(|x| x.parse().ok()).expect("a number");
            assert!(ratio > 1.0, "observed is slower than predicted: {line}");
        }
        let corrections = lines(&text, "allot_model_correction_ratio{");
        assert_eq!(corrections.len(), 2, "{text}");
        assert!(
            corrections.iter().all(|l| l
                .rsplit(' ')
                .next()
                .and_then(|x| x.parse::<f64>().ok())
                .is_some_and(|x| x > 1.0)),
            "{corrections:?}"
        );
        assert_eq!(lines(&text, "allot_model_calibration_confidence_ratio{").len(), 1, "{text}");
        assert_eq!(lines(&text, "allot_forecast_requests_per_second{").len(), 4, "{text}");
        assert_eq!(lines(&text, "allot_panic{").len(), 1, "{text}");
    }

    #[test]
    fn a_cycle_sets_every_family_and_a_removed_variant_disappears() {
        let metrics = Metrics::new();
        let mut obs = observed(8.0, 1, 1, 0.0);
        obs.pods[0].unschedulable = 2;
        obs.metric_age_s.insert("chat".into(), 12.5);
        let decision = decide(&obs, None, &mut Memory::default(), 1);
        metrics.record_decision(&obs, &decision, 0.02);
        let text = metrics.encode();
        let desired = lines(&text, "allot_desired_replicas{");
        assert_eq!(desired.len(), 2, "{text}");
        assert!(desired.iter().any(|l| l.contains("namespace=\"ns\"") && l.contains("variant=\"chat-a100\"")));
        assert!(text.contains("allot_pending_replicas{namespace=\"ns\",variant=\"chat-a100\",model=\"chat\",accelerator=\"A100-80GB\",role=\"both\",reason=\"unschedulable\"} 2"), "{text}");
        assert!(text.contains("allot_gpus{accelerator=\"A100-80GB\",state=\"pending\"} 8"), "{text}");
        assert!(
            text.contains(
                "allot_slo_target_bucket_info{model_name=\"chat\",class=\"premium\",metric=\"ttft\",le=\"1.0\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "allot_slo_target_bucket_info{model_name=\"chat\",class=\"premium\",metric=\"itl\",le=\"0.05\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("allot_slo_objective_ratio{model=\"chat\",class=\"premium\"} 0.95"), "{text}");
        assert!(text.contains("allot_metric_age_seconds{model=\"chat\"} 12.5"), "{text}");
        assert!(text.contains("allot_solver_status{status=\"optimal\"} 1"), "{text}");
        assert!(text.contains("allot_solver_status{status=\"fallback\"} 0"), "{text}");
        assert!(text.contains("allot_plan_changes_total 1"), "{text}");
        assert_eq!(lines(&text, "allot_predicted_slo_met{").len(), lines(&text, "allot_predicted_ttft_seconds{").len());
        assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends with EOF");

        // The next fleet has one variant fewer: its series go, they do not freeze.
        let mut smaller = observed(8.0, 1, 1, 30.0);
        smaller.snapshot.variants.truncate(1);
        smaller.pods.truncate(1);
        let next = decide(&smaller, Some(&decision), &mut Memory::default(), 2);
        metrics.record_decision(&smaller, &next, 0.02);
        let text = metrics.encode();
        assert_eq!(lines(&text, "allot_desired_replicas{").len(), 1, "{text}");
        assert!(!text.contains("chat-h100"), "{text}");
    }

    #[test]
    fn actuation_errors_are_counted_by_kind() {
        let metrics = Metrics::new();
        use crate::controller::{ActError, ActErrorKind};
        let applied = Applied {
            scaled: vec![],
            errors: vec![
                ("ns/a".into(), ActError::new(ActErrorKind::Status, "status patch failed: 409")),
                ("ns/b".into(), ActError::new(ActErrorKind::Scale, "forbidden")),
                ("ns/c".into(), ActError::new(ActErrorKind::NotObserved, "not observed this cycle")),
            ],
        };
        metrics.record_applied(&applied);
        metrics.record_observe_error(&ClusterError::NotConfigured("ConfigMap accelerator-unit-costs not found".into()));
        let text = metrics.encode();
        assert!(text.contains("allot_observe_errors_total{kind=\"not_configured\"} 1"), "{text}");
        for kind in ["status", "scale", "not_observed"] {
            assert!(text.contains(&format!("allot_actuation_errors_total{{kind=\"{kind}\"}} 1")), "{text}");
        }
    }
}
