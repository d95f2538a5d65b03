//! What Allot writes into a VariantAutoscaling's status (DESIGN §6), built purely from one
//! cycle's decision and what was observed about the variant. WVA's fields keep WVA's formats
//! (decimal strings, req/min) so its dashboards and `kubectl get va` columns keep working.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::crd::{
    ActuationStatus, Allocation, LoadProfile, OptimizedAlloc, PodStates, PredictedLatency, VariantAutoscalingStatus,
};
use crate::controller::{Decision, VariantDecision};
use crate::plan::PlanStatus;
use crate::prometheus::{MetricsProblem, ModelMetrics};

pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
pub const OPTIMIZATION_READY: &str = "OptimizationReady";
/// Whether Allot plans this variant at all: `True/Planned`, or `False` with why it is left out
/// (`InvalidSpec` naming the field, `VariantSkipped`, `TargetUnusable`, `NotConfigured`).
pub const READY: &str = "Ready";

/// What one variant looked like when observed, beyond the decision.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantFacts {
    /// `metadata.generation` of the VariantAutoscaling, stamped on conditions.
    pub generation: Option<i64>,
    /// Conditions already in status: their transition times are kept when the status holds.
    pub conditions: Vec<Condition>,
    pub gpus_per_replica: u32,
    pub max_batch: u32,
    /// Price of one GPU-hour in the unit of `accelerator-unit-costs` (WVA: cents).
    pub unit_cost: f64,
    /// The model's load this cycle, if Prometheus had it.
    pub metrics: Option<ModelMetrics>,
    /// Why the model's load was not usable this cycle.
    pub problem: Option<MetricsProblem>,
}

/// WVA's number format: two decimals, never negative.
fn decimal(v: f64) -> String {
    format!("{:.2}", if v.is_finite() { v.max(0.0) } else { 0.0 })
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The status for `variant` after `decision`; `applied` says whether the desired replicas
/// reached their actuator (published, or scaled directly).
pub fn status_for(
    decision: &Decision,
    variant: &VariantDecision,
    facts: &VariantFacts,
    applied: bool,
    now: Timestamp,
) -> VariantAutoscalingStatus {
    let metrics = facts.metrics.as_ref();
    let ms = |s: Option<f64>| decimal(s.unwrap_or(0.0) * 1000.0);
    let current_alloc = Allocation {
        accelerator: variant.accelerator.clone(),
        num_replicas: count(variant.current),
        max_batch: count(facts.max_batch),
        variant_cost: decimal(f64::from(variant.current) * f64::from(facts.gpus_per_replica) * facts.unit_cost),
        itl_average: ms(metrics.and_then(|m| m.itl_mean_s)),
        ttft_average: ms(metrics.and_then(|m| m.ttft_mean_s)),
        load: LoadProfile {
            arrival_rate: decimal(metrics.map_or(0.0, |m| m.arrival_rps * 60.0)),
            avg_input_tokens: decimal(metrics.and_then(|m| m.input_tokens).unwrap_or(0.0)),
            avg_output_tokens: decimal(metrics.and_then(|m| m.output_tokens).unwrap_or(0.0)),
        },
    };
    let predicted = decision
        .plan
        .variants
        .iter()
        .find(|p| p.name == variant.name)
        .and_then(|p| p.predicted.as_ref())
        .filter(|_| variant.desired > 0)
        .map(|p| PredictedLatency { ttft_average: p.ttft_ms.map(decimal), itl_average: p.itl_ms.map(decimal) });

    let held = decision.held_models.get(&variant.model);
    let metrics_condition = match (&facts.problem, held) {
        (Some(problem), _) => (false, problem_reason(problem), problem.to_string()),
        (None, Some(reason)) => (false, "MetricsMissing", reason.clone()),
        (None, None) => (true, "MetricsFound", "load and latency metrics are available".to_string()),
    };
    let optimization_condition = if let Some(reason) = held {
        (false, "MetricsUnavailable", format!("held at {} replicas: {reason}", variant.desired))
    } else if decision.plan.status == PlanStatus::Fallback {
        (false, "OptimizationFailed", format!("no plan was found; kept {} replicas", variant.desired))
    } else {
        let mut message = format!("Optimization completed: {} replicas on {}", variant.desired, variant.accelerator);
        if let Some(reason) = &variant.reason {
            message.push_str(&format!(" (planned {}, {reason})", variant.planned));
        }
        (true, "OptimizationSucceeded", message)
    };
    let ready_condition = (true, "Planned", format!("planned by Allot on {}", variant.accelerator));
    let conditions = [
        (READY, ready_condition),
        (METRICS_AVAILABLE, metrics_condition),
        (OPTIMIZATION_READY, optimization_condition),
    ]
    .into_iter()
    .map(|(kind, (ok, reason, message))| condition(facts, kind, ok, reason, message, now))
    .collect();

    VariantAutoscalingStatus {
        current_alloc: Some(current_alloc),
        desired_optimized_alloc: Some(OptimizedAlloc {
            last_run_time: Some(Time(now)),
            accelerator: variant.accelerator.clone(),
            num_replicas: count(variant.desired),
        }),
        actuation: Some(ActuationStatus { applied }),
        predicted,
        pods: Some(PodStates {
            ready: variant.pods.ready,
            booting: variant.pods.booting,
            unschedulable: variant.pods.unschedulable,
            gated: variant.pods.gated,
        }),
        conditions,
    }
}

/// WVA's reasons for `MetricsAvailable=False` (reference/wva.md §1.3), plus one for bad values.
pub fn problem_reason(problem: &MetricsProblem) -> &'static str {
    match problem {
        MetricsProblem::Unavailable(_) => "PrometheusError",
        MetricsProblem::Missing(_) => "MetricsMissing",
        MetricsProblem::Stale { .. } => "MetricsStale",
        MetricsProblem::Invalid { .. } => "MetricsInvalid",
        MetricsProblem::Stuck { .. } => "MetricsStuck",
    }
}

/// A condition stamped with the generation; its transition time moves only when its status does
/// (metav1.Condition's contract).
fn condition(facts: &VariantFacts, kind: &str, ok: bool, reason: &str, message: String, now: Timestamp) -> Condition {
    stamped(&facts.conditions, facts.generation, kind, ok, reason, message, now)
}

/// A condition of type `kind`, keeping the transition time of `existing`'s entry of that type
/// while its status holds.
pub fn stamped(
    existing: &[Condition],
    generation: Option<i64>,
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = existing
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// A stored status (as the API server returned it, possibly in another controller's shape) with
/// its `Ready` condition replaced: what Allot applies to a variant it leaves out, so that the
/// fields it wrote before stay (server-side apply drops fields a manager stops sending).
pub fn with_ready(stored: Option<&serde_json::Value>, ready: &Condition) -> serde_json::Value {
    let mut status = match stored {
        Some(serde_json::Value::Object(m)) => serde_json::Value::Object(m.clone()),
        _ => serde_json::json!({}),
    };
    let entry = serde_json::to_value(ready).expect("conditions serialize");
    let conditions = status
        .as_object_mut()
        .expect("built as an object")
        .entry("conditions")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if !conditions.is_array() {
        *conditions = serde_json::Value::Array(Vec::new());
    }
    let list = conditions.as_array_mut().expect("an array");
    list.retain(|c| c.get("type").and_then(|t| t.as_str()) != Some(READY));
    list.push(entry);
    status
}
