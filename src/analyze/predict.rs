//! "What latency at this load?": the latency model of one or every variant of a snapshot at
//! given arrival rates, with each class's capacity at its SLO. What `allot predict` and
//! `POST /v1/predict` answer, from the same replica model the planner sizes with.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::capacity::Capacity;
use super::fleet::{capacity, replica_model};
use super::queue::{QueueMetrics, Workload};
use super::{ItlPopulation, Role, Statistic};
use crate::scenario::Snapshot;
use crate::scenario::snapshot::Demand;

/// Most rates one prediction evaluates (each is one steady state per variant).
pub const MAX_RATES: usize = 1000;

/// What to predict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Only this variant (by name); every variant with a profile when absent.
    #[serde(default)]
    pub variant: Option<String>,
    /// Replicas sharing the model's traffic evenly; the variant's current replicas (at least 1)
    /// when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100_000)]
    pub replicas: Option<u32>,
    /// Total arrival rates of the variant's model (req/s), split over its classes as the
    /// scenario's load is; the scenario's own rate when empty.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub rates_rps: Vec<f64>,
    /// Factors on the profile's terms, as the controller's calibration applies them (its
    /// `variants[].calibration` factors, or a VariantAutoscaling's `status.calibration`); the
    /// profile as given when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<Correction>,
}

/// A calibration correction: factors on a profile's prefill and decode terms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Correction {
    /// On γ, δ, ε and the TTFT overhead.
    #[schema(minimum = 0.01, maximum = 100)]
    pub prefill_factor: f64,
    /// On α, β and η.
    #[schema(minimum = 0.01, maximum = 100)]
    pub decode_factor: f64,
}

/// The range a correction's factors may take.
const CORRECTION_RANGE: std::ops::RangeInclusive<f64> = 0.01..=100.0;

/// One variant's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VariantPrediction {
    pub variant: String,
    pub model: String,
    pub accelerator: String,
    pub role: Role,
    pub replicas: u32,
    /// The correction the prediction used, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<Correction>,
    /// Each class's capacity at its own SLO, req/s per replica.
    pub capacities: Vec<ClassCapacity>,
    pub points: Vec<RatePoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassCapacity {
    pub class: String,
    #[serde(flatten)]
    pub capacity: Capacity,
}

/// The steady state at one rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RatePoint {
    /// The model's total arrival rate (req/s).
    pub rate_rps: f64,
    /// What one replica receives.
    pub per_replica_rps: f64,
    /// The rate one replica saturates at, for this mix of classes.
    pub saturation_rps: f64,
    /// False when the rate is at or past saturation: the queue grows without bound, and no
    /// latency is given.
    pub stable: bool,
    /// The replica's steady state (the classes' sizes mixed by rate); absent when not stable.
    pub metrics: Option<QueueMetrics>,
    /// Each class's targets checked against it.
    pub classes: Vec<ClassCheck>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassCheck {
    pub class: String,
    pub rate_rps: f64,
    /// The class's TTFT statistic at this rate and its target (ms).
    pub ttft: Option<Checked>,
    /// The class's ITL statistic (over its population) and its target (ms).
    pub itl: Option<Checked>,
    /// Every target met (false when not stable).
    pub met: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Checked {
    pub statistic: Statistic,
    pub predicted_ms: f64,
    pub target_ms: f64,
}

/// Why nothing can be predicted.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PredictError {
    #[error("no variant named {0:?}")]
    UnknownVariant(String),
    #[error("variant {0:?} has no latency profile (a measured capacity_rps has no latency to predict)")]
    NoProfile(String),
    #[error("no variant has a latency profile")]
    NothingToPredict,
    #[error("rate {index} is {value}: rates are finite and ≥ 0 req/s, at most 10⁶")]
    BadRate { index: usize, value: f64 },
    #[error("{0} rates: at most {MAX_RATES}")]
    TooManyRates(usize),
    #[error("replicas must be 1..=100000, got {0}")]
    BadReplicas(u32),
    #[error("model {0:?} has no load in the scenario, so its classes cannot be weighted")]
    NoClasses(String),
    #[error("correction {part}_factor is {value}: factors are finite, from 0.01 to 100")]
    BadCorrection { part: &'static str, value: f64 },
}

/// Predict every requested variant at every rate.
pub fn predict(snapshot: &Snapshot, request: &PredictRequest) -> Result<Vec<VariantPrediction>, PredictError> {
    if request.rates_rps.len() > MAX_RATES {
        return Err(PredictError::TooManyRates(request.rates_rps.len()));
    }
    if let Some((index, &value)) =
        request.rates_rps.iter().enumerate().find(|(_, r)| !(r.is_finite() && **r >= 0.0 && **r <= 1e6))
    {
        return Err(PredictError::BadRate { index, value });
    }
    if let Some(n) = request.replicas.filter(|n| !(1..=100_000).contains(n)) {
        return Err(PredictError::BadReplicas(n));
    }
    if let Some(c) = request.correction {
        for (part, value) in [("prefill", c.prefill_factor), ("decode", c.decode_factor)] {
            if !CORRECTION_RANGE.contains(&value) {
                return Err(PredictError::BadCorrection { part, value });
            }
        }
    }
    let chosen: Vec<usize> = match &request.variant {
        Some(name) => {
            let v = snapshot
                .variants
                .iter()
                .position(|v| &v.name == name)
                .ok_or_else(|| PredictError::UnknownVariant(name.clone()))?;
            if snapshot.variants[v].profile.is_none() {
                return Err(PredictError::NoProfile(name.clone()));
            }
            vec![v]
        }
        None => (0..snapshot.variants.len()).filter(|&v| snapshot.variants[v].profile.is_some()).collect(),
    };
    if chosen.is_empty() {
        return Err(PredictError::NothingToPredict);
    }
    chosen.into_iter().map(|v| predict_variant(snapshot, v, request)).collect()
}

fn predict_variant(snapshot: &Snapshot, v: usize, request: &PredictRequest) -> Result<VariantPrediction, PredictError> {
    let mut corrected;
    let mut variant = &snapshot.variants[v];
    if let Some(c) = request.correction {
        corrected = variant.clone();
        if let Some(p) = corrected.profile.as_mut() {
            p.params = p.params.corrected(c.prefill_factor, c.decode_factor);
        }
        variant = &corrected;
    }
    let model = &snapshot.models[variant.model];
    if model.demands.is_empty() {
        return Err(PredictError::NoClasses(model.name.clone()));
    }
    let replicas = request.replicas.unwrap_or(variant.current_replicas.max(1));
    let class_name = |d: &Demand| snapshot.classes[d.class].name.clone();
    let capacities = model
        .demands
        .iter()
        .map(|d| ClassCapacity {
            class: class_name(d),
            capacity: capacity(variant, d, snapshot.settings.max_utilization),
        })
        .collect();
    // Class shares of the model's traffic: the scenario's rates, equal when all are 0.
    let scenario_total: f64 = model.demands.iter().map(|d| d.arrival_rps).sum();
    let shares: Vec<f64> = model
        .demands
        .iter()
        .map(|d| if scenario_total > 0.0 { d.arrival_rps / scenario_total } else { 1.0 / model.demands.len() as f64 })
        .collect();
    let rates = if request.rates_rps.is_empty() { vec![scenario_total] } else { request.rates_rps.clone() };
    let mix: Vec<(f64, Workload)> = model.demands.iter().zip(&shares).map(|(d, &s)| (s, d.workload)).collect();
    let mixed = Demand { workload: Workload::mixture(&mix), ..model.demands[0].clone() };
    let replica = replica_model(variant, &mixed).ok_or_else(|| PredictError::NoProfile(variant.name.clone()))?;
    let saturation_rps = replica.saturation_rps();
    let points = rates
        .iter()
        .map(|&rate| {
            let per_replica_rps = rate / f64::from(replicas);
            let metrics = if per_replica_rps < saturation_rps { replica.analyze(per_replica_rps) } else { None };
            let classes = model
                .demands
                .iter()
                .zip(&shares)
                .map(|(d, &share)| {
                    let check =
                        |target: Option<super::capacity::Target>,
                         value: &dyn Fn(&QueueMetrics, Statistic, ItlPopulation) -> f64| {
                            target.zip(metrics.as_ref()).map(|(t, m)| Checked {
                                statistic: t.statistic,
                                predicted_ms: value(m, t.statistic, t.over),
                                target_ms: t.ms,
                            })
                        };
                    let ttft =
                        if variant.role == Role::Decode { None } else { check(d.slo.ttft, &|m, s, _| m.ttft_ms(s)) };
                    let itl = if variant.role == Role::Prefill {
                        None
                    } else {
                        check(d.slo.itl, &|m, s, over| m.itl_ms_over(s, over))
                    };
                    let met = metrics.is_some()
                        && [&ttft, &itl].iter().all(|c| c.is_none_or(|c| c.predicted_ms <= c.target_ms * (1.0 + 1e-6)));
                    ClassCheck { class: class_name(d), rate_rps: rate * share, ttft, itl, met }
                })
                .collect();
            RatePoint { rate_rps: rate, per_replica_rps, saturation_rps, stable: metrics.is_some(), metrics, classes }
        })
        .collect();
    Ok(VariantPrediction {
        variant: variant.name.clone(),
        model: model.name.clone(),
        accelerator: snapshot.accelerators[variant.accelerator].name.clone(),
        role: variant.role,
        replicas,
        correction: request.correction,
        capacities,
        points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario;

    const SCENARIO: &str = "\
accelerators: [{ name: H100, gpus: 16, cost_usd_per_gpu_hour: 4 }]
service_classes:
  - { name: fast, priority: 1, targets: [{ model: m, ttft: { ms: 500, statistic: p90 }, itl: { ms: 60 } }] }
  - { name: slow, priority: 2, targets: [{ model: m, ttft: { ms: 5000, statistic: p90 }, itl: { ms: 120 } }] }
load:
  - { model: m, class: fast, arrival_rate_rps: 1, input_tokens: 1155, output_tokens: 211 }
  - { model: m, class: slow, arrival_rate_rps: 3, input_tokens: 1155, output_tokens: 211 }
variants:
  - { name: v, model: m, accelerator: H100, gpus_per_replica: 4, max_batch: 64, current_replicas: 2, profile: llama2-70b/h100-80gb/tp4 }
";

    fn snapshot() -> Snapshot {
        scenario::load(SCENARIO).expect("valid")
    }

    #[test]
    fn latency_grows_with_rate_until_saturation_and_classes_split_as_the_load() {
        let request = PredictRequest { rates_rps: vec![0.5, 2.0, 4.0, 1000.0], ..Default::default() };
        let out = predict(&snapshot(), &request).expect("predicts");
        let v = &out[0];
        assert_eq!((v.variant.as_str(), v.replicas), ("v", 2), "current replicas by default");
        let means: Vec<f64> = v.points.iter().filter_map(|p| p.metrics.map(|m| m.ttft.mean_ms)).collect();
        assert_eq!(means.len(), 3, "1000 req/s is past saturation");
        assert!(means.windows(2).all(|w| w[0] < w[1]), "{means:?}");
        let last = &v.points[3];
        assert!(!last.stable && last.metrics.is_none() && last.classes.iter().all(|c| !c.met));
        // 1 : 3 as in the scenario.
        let p = &v.points[1];
        assert_eq!(p.per_replica_rps, 1.0);
        assert!((p.classes[0].rate_rps - 0.5).abs() < 1e-12 && (p.classes[1].rate_rps - 1.5).abs() < 1e-12);
        // The looser class meets its targets wherever the stricter one does.
        for p in &v.points {
            assert!(!p.classes[0].met || p.classes[1].met);
        }
        // Each class's capacity at its SLO, and the check agrees with it: met below, missed well above.
        let fast = v.capacities[0].capacity.rps;
        assert!(fast > 0.0 && v.capacities[1].capacity.rps >= fast);
    }

    #[test]
    fn the_scenarios_own_rate_by_default_and_bad_requests_are_named() {
        let s = snapshot();
        let out = predict(&s, &PredictRequest { replicas: Some(4), ..Default::default() }).expect("predicts");
        assert_eq!(out[0].points.len(), 1);
        assert_eq!(out[0].points[0].rate_rps, 4.0);
        assert_eq!(out[0].points[0].per_replica_rps, 1.0);
        let bad = |r: PredictRequest| predict(&s, &r).expect_err("refused").to_string();
        assert!(
            bad(PredictRequest { variant: Some("w".into()), ..Default::default() }).contains("no variant named \"w\"")
        );
        assert!(bad(PredictRequest { rates_rps: vec![1.0, f64::NAN], ..Default::default() }).contains("rate 1 is NaN"));
        assert!(bad(PredictRequest { rates_rps: vec![-1.0], ..Default::default() }).contains("≥ 0"));
        assert!(bad(PredictRequest { replicas: Some(0), ..Default::default() }).contains("replicas must be"));
        assert!(bad(PredictRequest { rates_rps: vec![1.0; MAX_RATES + 1], ..Default::default() }).contains("at most"));
    }

    #[test]
    fn a_correction_predicts_what_the_corrected_profile_predicts() {
        let s = snapshot();
        let correction = Correction { prefill_factor: 1.3, decode_factor: 1.2 };
        let rates = vec![1.0, 2.0];
        let request = PredictRequest { rates_rps: rates.clone(), correction: Some(correction), ..Default::default() };
        let corrected = predict(&s, &request).expect("predicts");
        assert_eq!(corrected[0].correction, Some(correction));
        // The same as a scenario whose profile carries the corrected terms.
        let mut by_hand = s.clone();
        for v in &mut by_hand.variants {
            let p = v.profile.as_mut().expect("profile");
            p.params = p.params.corrected(1.3, 1.2);
        }
        let expected =
            predict(&by_hand, &PredictRequest { rates_rps: rates.clone(), ..Default::default() }).expect("predicts");
        assert_eq!(corrected[0].points, expected[0].points);
        assert_eq!(corrected[0].capacities, expected[0].capacities);
        // Slower terms: more latency and less capacity than the profile as given.
        let given = predict(&s, &PredictRequest { rates_rps: rates, ..Default::default() }).expect("predicts");
        let ttft = |p: &VariantPrediction| p.points[0].metrics.as_ref().expect("stable").ttft.mean_ms;
        assert!(ttft(&corrected[0]) > ttft(&given[0]));
        assert!(corrected[0].capacities[0].capacity.rps < given[0].capacities[0].capacity.rps);

        for (prefill_factor, decode_factor, part) in
            [(f64::NAN, 1.0, "prefill"), (1.0, 0.0, "decode"), (1e9, 1.0, "prefill")]
        {
            let request =
                PredictRequest { correction: Some(Correction { prefill_factor, decode_factor }), ..Default::default() };
            let e = predict(&s, &request).expect_err("refused").to_string();
            assert!(e.contains(&format!("{part}_factor")), "{e}");
        }
    }
}
