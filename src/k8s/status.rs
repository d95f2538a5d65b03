//! What Allot writes into a VariantAutoscaling's status (DESIGN §6), built purely from one
//! cycle's decision and what was observed about the variant. WVA's fields keep WVA's formats
//! (decimal strings, req/min) so its dashboards and `kubectl get va` columns keep working.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::crd::{
    ActuationStatus, Allocation, CalibrationStatus, LoadProfile, OptimizedAlloc, PodStates, PredictedLatency,
    VariantAutoscalingStatus,
};
use crate::controller::calibrate::{CalibrationReport, CalibrationState};
use crate::controller::{Decision, VariantDecision};
use crate::plan::PlanStatus;
use crate::prometheus::{MetricsProblem, ModelMetrics};

pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
pub const OPTIMIZATION_READY: &str = "OptimizationReady";
/// Whether Allot plans this variant at all: `True/Planned`, or `False` with why it is left out
/// (`InvalidSpec` naming the field, `VariantSkipped`, `TargetUnusable`, `NotConfigured`).
pub const READY: &str = "Ready";
/// Whether the variant's profile is calibrated against what its servers delivered:
/// `True/Calibrated`, or `False` with `Calibrating`, `InsufficientTraffic` or `NotCalibrated`.
pub const MODEL_CALIBRATED: &str = "ModelCalibrated";
/// Whether the profile is off beyond the drift threshold: `True/ProfileDrift` (the plan uses the
/// correction; refit or replace the profile), `False/WithinTolerance`, or `Unknown/NoEvidence`.
pub const MODEL_DRIFT: &str = "ModelDrift";

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
    /// The model runs no replica, so no server exports its metrics; the gateway's queue wakes it.
    pub at_zero: bool,
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
        (None, None) if facts.at_zero => (
            true,
            "ScaledToZero",
            "no replica runs, so no server exports metrics; requests queued at the gateway bring one back".to_string(),
        ),
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
    let mut conditions: Vec<Condition> = [
        (READY, ready_condition),
        (METRICS_AVAILABLE, metrics_condition),
        (OPTIMIZATION_READY, optimization_condition),
    ]
    .into_iter()
    .map(|(kind, (ok, reason, message))| condition(facts, kind, ok, reason, message, now))
    .collect();
    let calibration = variant.calibration.as_ref();
    let (status, reason, message) = calibrated_condition(calibration);
    conditions.push(stamped_as(&facts.conditions, facts.generation, MODEL_CALIBRATED, status, reason, message, now));
    let (status, reason, message) = drift_condition(calibration);
    conditions.push(stamped_as(&facts.conditions, facts.generation, MODEL_DRIFT, status, reason, message, now));

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
        calibration: calibration.map(|r| CalibrationStatus {
            state: r.state.as_str().to_string(),
            prefill_factor: r.prefill_factor,
            decode_factor: r.decode_factor,
            confidence: r.confidence,
            ttft_error_ratio: r.ttft_error_ratio.filter(|x| x.is_finite()),
            itl_error_ratio: r.itl_error_ratio.filter(|x| x.is_finite()),
            profile_digest: r.profile_digest.clone(),
        }),
        conditions,
    }
}

/// The correction in words: `prefill ×1.30, decode ×0.95 (confidence 0.87)`.
fn correction(r: &CalibrationReport) -> String {
    format!("prefill ×{:.2}, decode ×{:.2} (confidence {:.2})", r.prefill_factor, r.decode_factor, r.confidence)
}

/// `ModelCalibrated` for a variant's calibration report (none: nothing learned, nothing used).
fn calibrated_condition(report: Option<&CalibrationReport>) -> (&'static str, &'static str, String) {
    let Some(r) = report else {
        return (
            "False",
            "NotCalibrated",
            "the profile is planned as given: no latency observed yet, or calibration does not apply".into(),
        );
    };
    let observed = match (r.ttft_error_ratio, r.itl_error_ratio) {
        (Some(t), Some(i)) => format!("; observed over profile: TTFT ×{t:.2}, ITL ×{i:.2}"),
        _ => String::new(),
    };
    let note = r.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
    let text = format!("{}{observed}{note}", correction(r));
    match r.state {
        CalibrationState::Calibrated => ("True", "Calibrated", format!("planned with {text}")),
        CalibrationState::Calibrating => ("False", "Calibrating", format!("converging: {text}")),
        CalibrationState::InsufficientTraffic => ("False", "InsufficientTraffic", format!("unchanged: {text}")),
        CalibrationState::NotCalibrated => ("False", "NotCalibrated", format!("not calibrated{note}")),
    }
}

/// `ModelDrift`: whether the learned correction says the profile is off beyond the threshold.
fn drift_condition(report: Option<&CalibrationReport>) -> (&'static str, &'static str, String) {
    match report {
        Some(r) if r.drift => (
            "True",
            "ProfileDrift",
            format!(
                "the profile is off beyond the drift threshold; the plan uses {}: refit the profile",
                correction(r)
            ),
        ),
        Some(r) if r.confidence >= 0.5 && r.state != CalibrationState::NotCalibrated => (
            "False",
            "WithinTolerance",
            format!("the correction in use is within the drift threshold: {}", correction(r)),
        ),
        _ => ("Unknown", "NoEvidence", "too little observed latency to judge the profile".into()),
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
    stamped_as(existing, generation, kind, if ok { "True" } else { "False" }, reason, message, now)
}

/// [`stamped`] with any status (`True`, `False`, `Unknown`).
fn stamped_as(
    existing: &[Condition],
    generation: Option<i64>,
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::observed;
    use crate::controller::{Memory, decide};

    fn facts() -> VariantFacts {
        VariantFacts {
            generation: Some(2),
            conditions: vec![],
            gpus_per_replica: 4,
            max_batch: 64,
            unit_cost: 425.0,
            metrics: None,
            problem: None,
            at_zero: false,
        }
    }

    fn report(state: CalibrationState, factor: f64, confidence: f64, drift: bool) -> CalibrationReport {
        CalibrationReport {
            state,
            prefill_factor: factor,
            decode_factor: 1.0,
            confidence,
            ttft_error_ratio: Some(factor),
            itl_error_ratio: Some(f64::NAN),
            ttft_residual_ratio: None,
            itl_residual_ratio: None,
            saturated: false,
            drift,
            profile_digest: "0123456789abcdef".into(),
            note: None,
        }
    }

    fn status_with(calibration: Option<CalibrationReport>) -> VariantAutoscalingStatus {
        let o = observed(8.0, 1, 1, 0.0);
        let mut d = decide(&o, None, &mut Memory::reactive(Default::default()), 1);
        d.variants[1].calibration = calibration;
        let now: Timestamp = "2026-12-02T08:00:00Z".parse().expect("time");
        status_for(&d, &d.variants[1], &facts(), true, now)
    }

    fn kind<'a>(s: &'a VariantAutoscalingStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == kind).unwrap_or_else(|| panic!("{kind} in {s:#?}"))
    }

    #[test]
    fn a_calibrated_profile_is_written_with_its_correction_and_drift() {
        let s = status_with(Some(report(CalibrationState::Calibrated, 1.4, 0.9, true)));
        let c = s.calibration.as_ref().expect("calibration written");
        assert_eq!((c.state.as_str(), c.prefill_factor, c.decode_factor, c.confidence), ("calibrated", 1.4, 1.0, 0.9));
        assert_eq!((c.ttft_error_ratio, c.itl_error_ratio), (Some(1.4), None), "a NaN ratio is not written");
        let calibrated = kind(&s, MODEL_CALIBRATED);
        assert_eq!((calibrated.status.as_str(), calibrated.reason.as_str()), ("True", "Calibrated"));
        assert!(calibrated.message.contains("prefill ×1.40"), "{}", calibrated.message);
        let drift = kind(&s, MODEL_DRIFT);
        assert_eq!((drift.status.as_str(), drift.reason.as_str()), ("True", "ProfileDrift"));
        assert_eq!(drift.observed_generation, Some(2));
    }

    #[test]
    fn calibration_states_map_to_condition_reasons() {
        let s = status_with(Some(report(CalibrationState::Calibrating, 1.1, 0.6, false)));
        assert_eq!(kind(&s, MODEL_CALIBRATED).reason, "Calibrating");
        assert_eq!(
            (kind(&s, MODEL_DRIFT).status.as_str(), kind(&s, MODEL_DRIFT).reason.as_str()),
            ("False", "WithinTolerance")
        );
        let s = status_with(Some(report(CalibrationState::InsufficientTraffic, 1.0, 0.1, false)));
        assert_eq!(kind(&s, MODEL_CALIBRATED).reason, "InsufficientTraffic");
        assert_eq!(
            (kind(&s, MODEL_DRIFT).status.as_str(), kind(&s, MODEL_DRIFT).reason.as_str()),
            ("Unknown", "NoEvidence")
        );
        // Nothing learned: not written, and the conditions say the profile is used as given.
        let s = status_with(None);
        assert_eq!(s.calibration, None);
        assert_eq!(
            (kind(&s, MODEL_CALIBRATED).status.as_str(), kind(&s, MODEL_CALIBRATED).reason.as_str()),
            ("False", "NotCalibrated")
        );
        assert_eq!(kind(&s, MODEL_DRIFT).status, "Unknown");
    }
}
