//! Calibration from observation (DESIGN §3): each cycle, per variant with enough traffic, the
//! latency its servers delivered is compared with what the model predicts at the load they
//! carried, and a bounded, smoothed correction of the variant's profile follows the difference.
//!
//! The correction is two factors on the profile's time parameters: `prefill` on γ, δ, ε (what a
//! prompt costs), `decode` on α, β, η (what a decode step costs). Each cycle the factors that
//! would make the model reproduce the observed mean ITL and then the observed mean TTFT at the
//! observed per-replica load are found by bisection (the model's own prediction path, so every
//! part of it — queueing, prefill stalls, batch limits — is corrected together), and the factors
//! move part of the way there. Supply-side evidence overrides a profile that claims headroom: a
//! variant whose replicas stayed saturated (requests waiting behind full batches or a full KV
//! cache) over the window served at most what it completed, so its model may not promise more.
//!
//! Guard rails: a variant with fewer finished requests than `min_requests`, or a window shorter
//! than `min_window_s`, changes nothing; a factor moves at most `max_step` per cycle and stays
//! within `[min_factor, max_factor]`; a change of the profile or engine settings (their digest)
//! resets the correction. Pure: the state is explicit, the caller passes the evidence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::evidence::{Evidence, ServedStats};
use crate::analyze::queue::Workload;
use crate::analyze::{LatencyParams, Role, fleet};
use crate::scenario::Snapshot;
use crate::scenario::snapshot::{Demand, Model, Variant};

/// Calibration's guard rails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalibrationSettings {
    /// Correct profiles from observation at all.
    pub enabled: bool,
    /// Finished requests a window needs before it changes anything.
    pub min_requests: u64,
    /// Shortest window that counts, seconds.
    pub min_window_s: f64,
    /// Most a factor changes in one cycle (0.3: by at most ×1.3 or ÷1.3).
    pub max_step: f64,
    /// Bounds of a factor in total.
    pub min_factor: f64,
    pub max_factor: f64,
    /// Share of the way to a full window's estimate a factor moves (smoothing).
    pub gain: f64,
    /// A correction beyond this (0.25: ×1.25 or ÷1.25) is reported as drift (`ModelDrift`).
    pub drift_threshold: f64,
}

impl Default for CalibrationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            min_requests: 50,
            min_window_s: 30.0,
            max_step: 0.3,
            min_factor: 0.4,
            max_factor: 3.0,
            gain: 0.6,
            drift_threshold: 0.25,
        }
    }
}

impl CalibrationSettings {
    /// Problems with the settings, as `field: what is wrong`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, v: f64, lo: f64, hi: f64| {
            if !(v.is_finite() && v >= lo && v <= hi) {
                out.push(format!("{name}: must be a number ≥ {lo} and ≤ {hi}, got {v}"));
            }
        };
        check("min_window_s", self.min_window_s, 0.0, 86_400.0);
        check("max_step", self.max_step, 0.0, 10.0);
        check("min_factor", self.min_factor, 0.05, 1.0);
        check("max_factor", self.max_factor, 1.0, 20.0);
        check("gain", self.gain, 0.0, 1.0);
        check("drift_threshold", self.drift_threshold, 0.0, 10.0);
        if self.min_requests > 1_000_000 {
            out.push(format!("min_requests: must be ≤ 1000000, got {}", self.min_requests));
        }
        out
    }
}

/// Where a variant's calibration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationState {
    /// Enough evidence, and the corrected model reproduces what is observed.
    Calibrated,
    /// The correction is still moving (or its evidence is still thin).
    Calibrating,
    /// Too little traffic or too short a window this cycle: nothing changed.
    InsufficientTraffic,
    /// This variant is not calibrated (no profile, a disaggregated role, calibration off).
    NotCalibrated,
}

impl CalibrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            CalibrationState::Calibrated => "calibrated",
            CalibrationState::Calibrating => "calibrating",
            CalibrationState::InsufficientTraffic => "insufficient_traffic",
            CalibrationState::NotCalibrated => "not_calibrated",
        }
    }
}

/// The correction in use for one variant and what this cycle's evidence said: the plan JSON's
/// `variants[].calibration`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CalibrationReport {
    pub state: CalibrationState,
    /// Factor on the profile's prefill parameters (γ, δ, ε) the plan uses.
    pub prefill_factor: f64,
    /// Factor on the profile's decode parameters (α, β, η) the plan uses.
    pub decode_factor: f64,
    /// 0 to 1: how much evidence the correction rests on.
    pub confidence: f64,
    /// Observed mean TTFT over what the profile as given predicts at the observed load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_error_ratio: Option<f64>,
    /// The same for the mean ITL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_error_ratio: Option<f64>,
    /// Observed over predicted with the correction now in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_residual_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_residual_ratio: Option<f64>,
    /// The variant's replicas were saturated over the window (supply-side evidence).
    pub saturated: bool,
    /// The correction exceeds the drift threshold with enough confidence (`ModelDrift`).
    #[serde(default)]
    pub drift: bool,
    /// Digest of the profile and engine settings the correction belongs to.
    pub profile_digest: String,
    /// Why nothing changed, when nothing did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl CalibrationReport {
    /// The correction exceeds the drift threshold with enough confidence (`ModelDrift`).
    pub fn drifted(&self, settings: &CalibrationSettings) -> bool {
        let limit = (1.0 + settings.drift_threshold).ln();
        self.confidence >= 0.5 && (self.prefill_factor.ln().abs() > limit || self.decode_factor.ln().abs() > limit)
    }
}

/// One variant's correction.
#[derive(Clone, Debug, PartialEq)]
struct VariantState {
    digest: String,
    prefill: f64,
    decode: f64,
    /// Finished requests the correction has seen since its last reset.
    evidence_requests: f64,
    /// Whether the last cycle's corrected prediction matched (within 15 %).
    matched: bool,
    /// Whether the last window with traffic was not a steady state: the requests finishing in
    /// the next one waited in its queue, so that one is not steady either.
    unsteady: bool,
}

impl VariantState {
    fn new(digest: String) -> Self {
        Self { digest, prefill: 1.0, decode: 1.0, evidence_requests: 0.0, matched: false, unsteady: false }
    }

    fn confidence(&self, settings: &CalibrationSettings) -> f64 {
        1.0 - (-self.evidence_requests / (5.0 * settings.min_requests.max(1) as f64)).exp()
    }
}

/// A window saturated for more than this share of it (and less than 0.9: saturated) held a
/// queue the steady state does not explain.
const TRANSIENT_SATURATION: f64 = 0.1;
/// Arrivals and completions differing by more than this share: the queue grew or drained.
const UNSTEADY_FLOW: f64 = 0.15;

/// Every variant's correction, by variant name: loop state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    variants: BTreeMap<String, VariantState>,
}

/// What a variant's correction belongs to: its profile and the engine settings it runs with.
pub fn profile_digest(v: &Variant) -> String {
    let text = format!("{:?}|{}|{:?}|{}", v.profile, v.max_batch, v.role, v.gpus_per_replica);
    format!("{:016x}", super::decide::digest(&text))
}

/// The traffic of a model as one demand: its busiest class, with the classes' request sizes
/// mixed by their rates (what a replica serving all of them sees).
fn traffic_demand(model: &Model) -> Option<Demand> {
    let busiest = model.demands.iter().max_by(|a, b| a.arrival_rps.total_cmp(&b.arrival_rps))?;
    let mut demand = busiest.clone();
    demand.workload = mixture(&model.demands);
    Some(demand)
}

/// Rate-weighted request sizes of several classes.
fn mixture(demands: &[Demand]) -> Workload {
    let classes: Vec<(f64, Workload)> = demands.iter().map(|d| (d.arrival_rps, d.workload)).collect();
    Workload::mixture(&classes)
}

/// The model of one replica of `variant` with factors applied, and what it predicts.
struct Predictor<'a> {
    variant: Variant,
    demand: &'a Demand,
    base: LatencyParams,
    rps_per_replica: f64,
}

/// What the model predicts at one pair of factors.
#[derive(Clone, Copy, Debug)]
struct Predicted {
    ttft_ms: f64,
    itl_ms: f64,
}

impl Predictor<'_> {
    fn set(&mut self, prefill: f64, decode: f64) {
        if let Some(p) = self.variant.profile.as_mut() {
            p.params = self.base.corrected(prefill, decode);
        }
    }

    /// `None` when the load is at or past what the replica can sustain.
    fn predict(&mut self, prefill: f64, decode: f64) -> Option<Predicted> {
        self.set(prefill, decode);
        let m = fleet::replica_model(&self.variant, self.demand)?.analyze(self.rps_per_replica)?;
        Some(Predicted { ttft_ms: m.mean_ttft_ms(), itl_ms: m.mean_itl_ms() })
    }

    fn saturation_rps(&mut self, prefill: f64, decode: f64) -> Option<f64> {
        self.set(prefill, decode);
        fleet::replica_model(&self.variant, self.demand).map(|m| m.saturation_rps())
    }
}

/// The factor in `[lo, hi]` at which `predict` (increasing in it, `None` past saturation)
/// reaches `observed`, by bisection on its logarithm.
fn solve(lo: f64, hi: f64, observed: f64, mut predict: impl FnMut(f64) -> Option<f64>) -> f64 {
    let (mut a, mut b) = (lo.ln(), hi.ln());
    if predict(lo).is_none_or(|p| p >= observed) {
        return lo;
    }
    if predict(hi).is_some_and(|p| p <= observed) {
        return hi;
    }
    for _ in 0..14 {
        let mid = 0.5 * (a + b);
        match predict(mid.exp()) {
            Some(p) if p < observed => a = mid,
            _ => b = mid,
        }
    }
    (0.5 * (a + b)).exp()
}

/// Move `current` toward `target` by `weight` of the way in log space, at most `max_step`.
fn approach(current: f64, target: f64, weight: f64, settings: &CalibrationSettings) -> f64 {
    let step_limit = (1.0 + settings.max_step).ln();
    let delta = (weight * (target.ln() - current.ln())).clamp(-step_limit, step_limit);
    (current.ln() + delta).exp().clamp(settings.min_factor, settings.max_factor)
}

impl Calibration {
    /// Fold this cycle's evidence into every variant's correction and report each one.
    /// Variants no longer in the snapshot are forgotten.
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        evidence: &Evidence,
        settings: &CalibrationSettings,
    ) -> BTreeMap<String, CalibrationReport> {
        self.variants.retain(|name, _| snapshot.variants.binary_search_by(|v| v.name.as_str().cmp(name)).is_ok());
        let mut reports = BTreeMap::new();
        for v in &snapshot.variants {
            let digest = profile_digest(v);
            let state = self.variants.entry(v.name.clone()).or_insert_with(|| {
                // Take up what a previous controller learned for the same profile.
                let mut s = VariantState::new(digest.clone());
                if let Some(r) = evidence.restored.get(&v.name).filter(|r| r.profile_digest == digest) {
                    s.prefill = r.prefill_factor.clamp(settings.min_factor, settings.max_factor);
                    s.decode = r.decode_factor.clamp(settings.min_factor, settings.max_factor);
                    let c = r.confidence.clamp(0.0, 0.999);
                    s.evidence_requests = -(1.0 - c).ln() * 5.0 * settings.min_requests.max(1) as f64;
                }
                s
            });
            if state.digest != digest {
                // The profile or the engine settings changed: what was learned no longer applies.
                *state = VariantState::new(digest.clone());
            }
            let report = if !settings.enabled {
                Self::report(state, settings, CalibrationState::NotCalibrated, Some("calibration is off".into()))
            } else {
                update_one(state, v, &snapshot.models[v.model], evidence.served.get(&v.name), settings)
            };
            let drift = report.drifted(settings);
            reports.insert(v.name.clone(), CalibrationReport { drift, ..report });
        }
        reports
    }

    fn report(
        state: &VariantState,
        settings: &CalibrationSettings,
        kind: CalibrationState,
        note: Option<String>,
    ) -> CalibrationReport {
        CalibrationReport {
            state: kind,
            prefill_factor: state.prefill,
            decode_factor: state.decode,
            confidence: state.confidence(settings),
            ttft_error_ratio: None,
            itl_error_ratio: None,
            ttft_residual_ratio: None,
            itl_residual_ratio: None,
            saturated: false,
            drift: false,
            profile_digest: state.digest.clone(),
            note,
        }
    }

    /// `snapshot` with every variant's profile corrected as its calibration says.
    pub fn apply(&self, snapshot: &mut Snapshot) {
        for v in &mut snapshot.variants {
            let Some(state) = self.variants.get(&v.name) else { continue };
            if state.prefill == 1.0 && state.decode == 1.0 {
                continue;
            }
            if let Some(p) = v.profile.as_mut() {
                p.params = p.params.corrected(state.prefill, state.decode);
            }
        }
    }

    /// The factors in use for `variant`, when it has a correction.
    pub fn factors(&self, variant: &str) -> Option<(f64, f64)> {
        self.variants.get(variant).map(|s| (s.prefill, s.decode))
    }
}

/// One variant's update; the report says what happened.
fn update_one(
    state: &mut VariantState,
    v: &Variant,
    model: &Model,
    stats: Option<&ServedStats>,
    settings: &CalibrationSettings,
) -> CalibrationReport {
    let skip = |state: &VariantState, kind, note: &str| Calibration::report(state, settings, kind, Some(note.into()));
    let Some(profile) = v.profile.as_ref() else {
        return skip(state, CalibrationState::NotCalibrated, "no latency profile");
    };
    if v.role != Role::Both {
        return skip(state, CalibrationState::NotCalibrated, "prefill and decode roles are not calibrated yet");
    }
    let Some(stats) = stats else {
        return skip(state, CalibrationState::InsufficientTraffic, "no latency measured");
    };
    if stats.window_s < settings.min_window_s || stats.finished < settings.min_requests || stats.ready_replicas < 0.5 {
        return skip(
            state,
            CalibrationState::InsufficientTraffic,
            &format!(
                "{} requests finished over {:.0} s (needs {} over {:.0} s)",
                stats.finished, stats.window_s, settings.min_requests, settings.min_window_s
            ),
        );
    }
    let (Some(ttft), Some(itl)) = (stats.ttft, stats.itl) else {
        return skip(state, CalibrationState::InsufficientTraffic, "no TTFT or ITL measured");
    };
    // Supply side: saturated replicas served what they completed, whatever the profile claims.
    let saturated = stats.saturated_fraction >= 0.9 || stats.kv_usage_max.is_some_and(|k| k >= 0.98);
    // The model is a steady state. A window whose queue grew or drained (a burst, the backlog
    // of a start-up) or that was saturated for only part of it has latencies no steady state at
    // the observed rate explains — a TTFT of queue wait read as slow prefill — so it changes
    // nothing; a saturated window is evidence of its own (below).
    let drift_rps = (stats.arrival_rps - stats.completion_rps).abs();
    let unsteady_now = stats.saturated_fraction > TRANSIENT_SATURATION
        || drift_rps > UNSTEADY_FLOW * stats.arrival_rps.max(stats.completion_rps);
    let unsteady = unsteady_now || state.unsteady;
    state.unsteady = unsteady_now;
    if unsteady && !saturated {
        return skip(
            state,
            CalibrationState::Calibrating,
            &if unsteady_now {
                format!(
                    "not a steady state: {:.2} req/s arrived, {:.2} req/s finished, saturated {:.0} % of the window",
                    stats.arrival_rps,
                    stats.completion_rps,
                    100.0 * stats.saturated_fraction
                )
            } else {
                "the requests finishing now queued in the last window, which was not a steady state".to_string()
            },
        );
    }
    let Some(mut demand) = traffic_demand(model) else {
        return skip(state, CalibrationState::InsufficientTraffic, "the model has no demand");
    };
    // Predict for the requests the variant served.
    if let (Some(i), Some(o)) = (stats.input_tokens, stats.output_tokens) {
        // The observed means in the declared shape.
        let w = demand.workload;
        let scale = |d: crate::analyze::sizes::SizeDistribution, mean: f64| {
            let m = d.mean();
            if m > 0.0 { d.scaled(mean.max(1.0) / m) } else { d }
        };
        demand.workload = Workload { input: scale(w.input, i), output: scale(w.output, o), ..w };
    }
    let mut p = Predictor {
        variant: v.clone(),
        demand: &demand,
        base: profile.params,
        rps_per_replica: stats.arrival_rps / stats.ready_replicas,
    };
    let raw = p.predict(1.0, 1.0);
    let (lo, hi) = (settings.min_factor, settings.max_factor);
    // The factors that reproduce the observation: decode from ITL, then prefill from TTFT with
    // that decode, then decode again (ITL carries the prefills of the others).
    let mut prefill = state.prefill;
    let mut decode = state.decode;
    if !unsteady {
        for _ in 0..2 {
            decode = solve(lo, hi, itl.mean_ms, |d| p.predict(prefill, d).map(|x| x.itl_ms));
            prefill = solve(lo, hi, ttft.mean_ms, |f| p.predict(f, decode).map(|x| x.ttft_ms));
        }
    }
    if saturated && stats.completion_rps > 0.0 {
        let served_rps = stats.completion_rps / stats.ready_replicas;
        if let Some(promised) = p.saturation_rps(state.prefill, state.decode).filter(|&s| s > served_rps) {
            let k = promised / served_rps;
            prefill = prefill.max(state.prefill * k);
            decode = decode.max(state.decode * k);
        }
    }
    // Move part of the way, more with a fuller window and all the way the bound allows when
    // saturated (the evidence is unambiguous).
    let fullness = (stats.finished as f64 / (4.0 * settings.min_requests.max(1) as f64)).min(1.0);
    let weight = if saturated { 1.0 } else { settings.gain * fullness };
    state.prefill = approach(state.prefill, prefill, weight, settings);
    state.decode = approach(state.decode, decode, weight, settings);
    state.evidence_requests += stats.finished as f64;
    let residual = p.predict(state.prefill, state.decode);
    let ratio = |observed: f64, predicted: Option<f64>| predicted.filter(|&x| x > 0.0).map(|x| observed / x);
    let ttft_residual = ratio(ttft.mean_ms, residual.map(|r| r.ttft_ms));
    let itl_residual = ratio(itl.mean_ms, residual.map(|r| r.itl_ms));
    state.matched = [ttft_residual, itl_residual].iter().all(|r| r.is_some_and(|r| (r.ln()).abs() < 1.15f64.ln()));
    let confidence = state.confidence(settings);
    let kind = if state.matched && confidence >= 0.5 && !saturated {
        CalibrationState::Calibrated
    } else {
        CalibrationState::Calibrating
    };
    CalibrationReport {
        state: kind,
        prefill_factor: state.prefill,
        decode_factor: state.decode,
        confidence,
        ttft_error_ratio: ratio(ttft.mean_ms, raw.map(|r| r.ttft_ms)),
        itl_error_ratio: ratio(itl.mean_ms, raw.map(|r| r.itl_ms)),
        ttft_residual_ratio: ttft_residual,
        itl_residual_ratio: itl_residual,
        saturated,
        drift: false,
        profile_digest: state.digest.clone(),
        note: raw.is_none().then(|| "the profile as given predicts no steady state at the observed load".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::evidence::LatencySummary;
    use crate::controller::testing::observed;

    /// What the H100 variant of `observed` would measure at `rps` per replica if its true
    /// profile were the bundled one with every time parameter × `truth`.
    fn measured(snapshot: &Snapshot, rps: f64, replicas: f64, truth: f64) -> ServedStats {
        let v = snapshot.variants.iter().find(|v| v.name == "ns/chat-h100").expect("variant");
        let demand = &snapshot.models[v.model].demands[0];
        let mut t = v.clone();
        let p = t.profile.as_mut().expect("profile");
        p.params = p.params.corrected(truth, truth);
        let m = fleet::replica_model(&t, demand).expect("model").analyze(rps).expect("stable");
        ServedStats {
            window_s: 60.0,
            ready_replicas: replicas,
            arrival_rps: rps * replicas,
            completion_rps: rps * replicas,
            finished: (rps * replicas * 60.0) as u64,
            input_tokens: Some(demand.workload.mean_input_tokens()),
            output_tokens: Some(demand.workload.mean_output_tokens()),
            ttft: Some(LatencySummary { mean_ms: m.mean_ttft_ms(), ..LatencySummary::default() }),
            itl: Some(LatencySummary { mean_ms: m.mean_itl_ms(), ..LatencySummary::default() }),
            ..ServedStats::default()
        }
    }

    fn evidence(stats: ServedStats) -> Evidence {
        let mut e = Evidence::default();
        e.served.insert("ns/chat-h100".into(), stats);
        e
    }

    #[test]
    fn a_profile_30_percent_optimistic_is_corrected_within_a_few_cycles_and_bounded_per_cycle() {
        let snapshot = observed(8.0, 2, 0, 0.0).snapshot;
        let settings = CalibrationSettings::default();
        let mut c = Calibration::default();
        let truth = 1.0 / 0.7;
        let mut history = Vec::new();
        for _ in 0..8 {
            let r = c.update(&snapshot, &evidence(measured(&snapshot, 2.0, 2.0, truth)), &settings);
            history.push(r["ns/chat-h100"].clone());
        }
        // Never more than ×1.3 a cycle.
        let mut last = 1.0f64;
        for r in &history {
            assert!(r.decode_factor / last <= 1.3 + 1e-9, "{history:#?}");
            last = r.decode_factor;
        }
        let end = history.last().expect("cycles");
        // Mean TTFT and ITL at one load do not separate prefill from decode cost exactly (the
        // decode steps carry the others' prefills); what the planner relies on is that the
        // corrected model reproduces the observation and what a replica sustains.
        assert!((end.ttft_residual_ratio.expect("predicted") - 1.0).abs() < 0.05, "{end:?}");
        let v = snapshot.variants.iter().find(|v| v.name == "ns/chat-h100").expect("variant");
        let demand = &snapshot.models[v.model].demands[0];
        let capacity = |prefill: f64, decode: f64| {
            let mut t = v.clone();
            let p = t.profile.as_mut().expect("profile");
            p.params = p.params.corrected(prefill, decode);
            fleet::replica_model(&t, demand).expect("model").saturation_rps()
        };
        let (learned, true_rps) = (capacity(end.prefill_factor, end.decode_factor), capacity(truth, truth));
        assert!((learned / true_rps - 1.0).abs() < 0.1, "{learned} vs {true_rps} req/s: {end:?}");
        assert!(end.decode_factor > 1.2 && end.prefill_factor > 1.0, "{end:?}");
        assert_eq!(end.state, CalibrationState::Calibrated, "{end:?}");
        assert!(end.itl_error_ratio.expect("predicted") > 1.3, "{end:?}");
        assert!((end.itl_residual_ratio.expect("predicted") - 1.0).abs() < 0.05, "{end:?}");
        assert!(end.drifted(&settings));
        // The variant without traffic is untouched.
        let quiet = c.update(&snapshot, &Evidence::default(), &settings);
        assert_eq!(quiet["ns/chat-a100"].state, CalibrationState::InsufficientTraffic);
        assert_eq!((quiet["ns/chat-a100"].prefill_factor, quiet["ns/chat-a100"].decode_factor), (1.0, 1.0));
    }

    #[test]
    fn a_pessimistic_profile_is_corrected_down() {
        let snapshot = observed(8.0, 2, 0, 0.0).snapshot;
        let settings = CalibrationSettings::default();
        let mut c = Calibration::default();
        let truth = 1.0 / 1.3;
        let mut r = None;
        for _ in 0..8 {
            r = Some(c.update(&snapshot, &evidence(measured(&snapshot, 2.0, 2.0, truth)), &settings));
        }
        let r = &r.expect("cycles")["ns/chat-h100"];
        assert!((r.decode_factor / truth - 1.0).abs() < 0.05, "{r:?}");
        assert!(r.prefill_factor < 0.9, "{r:?}");
    }

    #[test]
    fn little_traffic_or_a_short_window_changes_nothing() {
        let snapshot = observed(8.0, 2, 0, 0.0).snapshot;
        let settings = CalibrationSettings::default();
        let mut c = Calibration::default();
        let mut few = measured(&snapshot, 2.0, 2.0, 1.5);
        few.finished = 10;
        let mut short = measured(&snapshot, 2.0, 2.0, 1.5);
        short.window_s = 10.0;
        for stats in [few, short] {
            let r = c.update(&snapshot, &evidence(stats), &settings);
            assert_eq!(r["ns/chat-h100"].state, CalibrationState::InsufficientTraffic, "{r:?}");
            assert_eq!(c.factors("ns/chat-h100"), Some((1.0, 1.0)));
        }
    }

    #[test]
    fn a_changed_profile_resets_the_correction() {
        let mut snapshot = observed(8.0, 2, 0, 0.0).snapshot;
        let settings = CalibrationSettings::default();
        let mut c = Calibration::default();
        for _ in 0..3 {
            c.update(&snapshot, &evidence(measured(&snapshot, 2.0, 2.0, 1.5)), &settings);
        }
        assert!(c.factors("ns/chat-h100").expect("state").1 > 1.2);
        let i = snapshot.variants.iter().position(|v| v.name == "ns/chat-h100").expect("variant");
        snapshot.variants[i].max_batch = 32;
        c.update(&snapshot, &Evidence::default(), &settings);
        assert_eq!(c.factors("ns/chat-h100"), Some((1.0, 1.0)));
    }

    #[test]
    fn saturated_replicas_override_a_profile_that_claims_headroom() {
        let snapshot = observed(8.0, 2, 0, 0.0).snapshot;
        let settings = CalibrationSettings::default();
        let mut c = Calibration::default();
        // Latency looks like the profile's, but the replicas completed a third of what the
        // model says they sustain while requests piled up behind full batches.
        let mut stats = measured(&snapshot, 2.0, 2.0, 1.0);
        let v = &snapshot.variants.iter().find(|v| v.name == "ns/chat-h100").expect("variant");
        let mu = fleet::replica_model(v, &snapshot.models[0].demands[0]).expect("model").saturation_rps();
        stats.completion_rps = 2.0 * mu / 3.0;
        stats.saturated_fraction = 1.0;
        let r = c.update(&snapshot, &evidence(stats), &settings);
        let r = &r["ns/chat-h100"];
        assert!(r.saturated);
        // One cycle moves by the most one step allows.
        assert!((r.decode_factor - 1.3).abs() < 1e-9 && (r.prefill_factor - 1.3).abs() < 1e-9, "{r:?}");
        assert_eq!(r.state, CalibrationState::Calibrating);
    }

    #[test]
    fn a_restored_calibration_is_taken_up_for_the_same_profile_only() {
        let snapshot = observed(8.0, 2, 0, 0.0).snapshot;
        let settings = CalibrationSettings::default();
        let v = snapshot.variants.iter().find(|v| v.name == "ns/chat-h100").expect("variant");
        let mut e = Evidence::default();
        e.restored.insert(
            v.name.clone(),
            crate::controller::evidence::RestoredCalibration {
                prefill_factor: 1.4,
                decode_factor: 1.3,
                confidence: 0.9,
                profile_digest: profile_digest(v),
            },
        );
        e.restored.insert(
            "ns/chat-a100".into(),
            crate::controller::evidence::RestoredCalibration {
                prefill_factor: 2.0,
                decode_factor: 2.0,
                confidence: 0.9,
                profile_digest: "another profile".into(),
            },
        );
        let mut c = Calibration::default();
        let r = c.update(&snapshot, &e, &settings);
        assert_eq!((r["ns/chat-h100"].prefill_factor, r["ns/chat-h100"].decode_factor), (1.4, 1.3));
        assert!((r["ns/chat-h100"].confidence - 0.9).abs() < 1e-9);
        assert_eq!(c.factors("ns/chat-a100"), Some((1.0, 1.0)));
        // Planning uses the correction.
        let mut planned = snapshot.clone();
        c.apply(&mut planned);
        let i = planned.variants.iter().position(|v| v.name == "ns/chat-h100").expect("variant");
        let (a, b) = (&snapshot.variants[i], &planned.variants[i]);
        let (pa, pb) = (a.profile.as_ref().expect("profile").params, b.profile.as_ref().expect("profile").params);
        assert!((pb.alpha_ms / pa.alpha_ms - 1.3).abs() < 1e-12 && (pb.delta_ms / pa.delta_ms - 1.4).abs() < 1e-12);
    }
}
