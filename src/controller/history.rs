//! The recent cycles, for the console (`GET /v1/history`): one compact record per cycle in a
//! bounded ring, built from what the loop publishes. Nothing here decides anything.
//!
//! What a cluster observed of SLO attainment is not part of an observation; a cluster that can
//! tell (the simulator: it sees every finished request) stages it with
//! [`History::stage_observed`], and the next record carries it.
//!
//! Fields that later versions of the plan add are passed through as they are: a variant's
//! `calibration` and a model's `forecast` (see [`extension`]), so the console renders them when a
//! plan carries them without this module knowing their shape.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Decision, Observed};
use crate::plan::{PlanMode, PlanStatus};
use crate::scenario::Snapshot;

/// Records kept: two hours of 30 s cycles.
pub const DEFAULT_CAPACITY: usize = 240;

/// The ring of recent cycle records, shared by the loop (writer) and the REST API (readers).
pub struct History {
    inner: Mutex<Inner>,
}

struct Inner {
    capacity: usize,
    records: VecDeque<Arc<CycleRecord>>,
    /// Observed requests per (model, class) since the last record.
    staged: BTreeMap<(String, String), ObservedAttainment>,
}

impl Default for History {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

/// One cycle as the console charts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CycleRecord {
    pub cycle: u64,
    /// Seconds since the Unix epoch (simulated seconds under `--simulate`).
    pub observed_at_s: f64,
    pub snapshot_id: String,
    pub status: PlanStatus,
    pub mode: PlanMode,
    pub solve_ms: f64,
    /// Planned replicas' cost.
    pub cost_usd_per_hour: f64,
    /// Cost of the replicas holding GPUs when the cycle observed.
    pub current_cost_usd_per_hour: f64,
    /// The fleet's replicas by state, all variants together.
    pub replicas: ReplicaTotals,
    /// Sorted by name.
    pub variants: Vec<VariantRecord>,
    /// Sorted by name.
    pub accelerators: Vec<AcceleratorRecord>,
    /// Per model (all classes together), sorted by name.
    pub models: Vec<ModelRecord>,
    /// Per (model, class) with demand, sorted by model then class.
    pub slo: Vec<SloRecord>,
    /// Models held on missing or stale metrics.
    pub held_models: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaTotals {
    pub desired: u32,
    pub ready: u32,
    pub booting: u32,
    /// Unschedulable and gated.
    pub pending: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VariantRecord {
    pub name: String,
    pub model: String,
    pub accelerator: String,
    /// Replicas holding GPUs (ready + booting).
    pub current: u32,
    pub planned: u32,
    pub desired: u32,
    pub ready: u32,
    pub booting: u32,
    /// Not scheduled: unschedulable and gated.
    pub pending: u32,
    /// The plan's latency-model correction for this variant, when it carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AcceleratorRecord {
    pub name: String,
    pub available_gpus: u32,
    /// GPUs the plan uses.
    pub used_gpus: u32,
    pub free_gpus: u32,
    /// GPUs the replicas holding GPUs use now.
    pub current_gpus: u32,
    /// GPUs that unschedulable replicas wait for.
    pub pending_gpus: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelRecord {
    pub name: String,
    pub demand_rps: f64,
    pub served_rps: f64,
    /// The plan's load forecast for this model, when it carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SloRecord {
    pub model: String,
    pub class: String,
    pub demand_rps: f64,
    /// Share of the demand planned onto variants predicted to meet the SLO.
    pub predicted_attainment: f64,
    /// The attainment the SLO asks for (its statistic's quantile; 0.5 for a mean target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// What the cluster observed since the previous record, where it can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<ObservedAttainment>,
}

/// Finished requests of a model held to one class's targets: the share whose own TTFT and mean
/// ITL were both within the target values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ObservedAttainment {
    pub requests: u64,
    pub met: u64,
    /// `met / requests`.
    pub attainment: f64,
}

impl ObservedAttainment {
    fn add(&mut self, other: &ObservedAttainment) {
        self.requests += other.requests;
        self.met += other.met;
        self.attainment = if self.requests > 0 { self.met as f64 / self.requests as f64 } else { 0.0 };
    }

    /// Counts of `met` out of `requests`.
    pub fn of(met: u64, requests: u64) -> Self {
        let mut out = Self::default();
        out.add(&Self { requests, met, attainment: 0.0 });
        out
    }
}

/// `GET /v1/history`: the records after a cycle, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// Records the ring keeps.
    pub capacity: usize,
    pub records: Vec<CycleRecord>,
}

impl History {
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Mutex::new(Inner { capacity, records: VecDeque::with_capacity(capacity), staged: BTreeMap::new() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add observed counts per (model, class); the next record carries their sum.
    pub fn stage_observed(&self, counts: &BTreeMap<(String, String), ObservedAttainment>) {
        let mut inner = self.lock();
        for (key, c) in counts {
            inner.staged.entry(key.clone()).or_default().add(c);
        }
    }

    /// Record one published cycle (the oldest record goes when the ring is full).
    pub fn record(&self, observed: &Observed, decision: &Decision) {
        let mut inner = self.lock();
        let staged = std::mem::take(&mut inner.staged);
        let record = Arc::new(CycleRecord::new(observed, decision, &staged));
        if inner.records.len() == inner.capacity {
            inner.records.pop_front();
        }
        inner.records.push_back(record);
    }

    /// The records of cycles after `after_cycle` (all when `None`), oldest first.
    pub fn page(&self, after_cycle: Option<u64>) -> HistoryPage {
        let inner = self.lock();
        let records = inner
            .records
            .iter()
            .filter(|r| after_cycle.is_none_or(|c| r.cycle > c))
            .map(|r| r.as_ref().clone())
            .collect();
        HistoryPage { capacity: inner.capacity, records }
    }
}

impl CycleRecord {
    /// The record of one cycle; `observed_counts` is what the cluster staged since the last one.
    pub fn new(
        observed: &Observed,
        decision: &Decision,
        observed_counts: &BTreeMap<(String, String), ObservedAttainment>,
    ) -> Self {
        let snapshot = &observed.snapshot;
        let plan = &decision.plan;
        // Fields this version does not know are read from the document as it serializes.
        let document = serde_json::to_value(decision).unwrap_or(serde_json::Value::Null);
        let gpus_per_replica = |name: &str| {
            snapshot
                .variants
                .binary_search_by(|v| v.name.as_str().cmp(name))
                .map_or(0, |i| snapshot.variants[i].gpus_per_replica)
        };
        let variants: Vec<VariantRecord> = decision
            .variants
            .iter()
            .map(|v| VariantRecord {
                name: v.name.clone(),
                model: v.model.clone(),
                accelerator: v.accelerator.clone(),
                current: v.current,
                planned: v.planned,
                desired: v.desired,
                ready: v.pods.ready,
                booting: v.pods.booting,
                pending: v.pods.unschedulable + v.pods.gated,
                calibration: extension(&document, Extension::Calibration, &v.name),
            })
            .collect();
        let mut pending_gpus: BTreeMap<&str, u32> = BTreeMap::new();
        let mut current_gpus: BTreeMap<&str, u32> = BTreeMap::new();
        for v in &decision.variants {
            let per = gpus_per_replica(&v.name);
            *pending_gpus.entry(v.accelerator.as_str()).or_default() += v.pods.unschedulable * per;
            *current_gpus.entry(v.accelerator.as_str()).or_default() += v.current * per;
        }
        let accelerators = plan
            .accelerators
            .iter()
            .map(|a| AcceleratorRecord {
                name: a.name.clone(),
                available_gpus: a.available_gpus,
                used_gpus: a.used_gpus,
                free_gpus: a.free_gpus,
                current_gpus: current_gpus.get(a.name.as_str()).copied().unwrap_or(a.current_gpus),
                pending_gpus: pending_gpus.get(a.name.as_str()).copied().unwrap_or(0),
            })
            .collect();
        let mut per_model: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for m in &plan.models {
            let e = per_model.entry(m.name.as_str()).or_default();
            e.0 += m.demand_rps;
            e.1 += m.served_rps;
        }
        let models = per_model
            .into_iter()
            .map(|(name, (demand_rps, served_rps))| ModelRecord {
                name: name.to_string(),
                demand_rps,
                served_rps,
                forecast: extension(&document, Extension::Forecast, name),
            })
            .collect();
        let predicted = plan.predicted_attainment();
        let slo = plan
            .models
            .iter()
            .map(|m| SloRecord {
                model: m.name.clone(),
                class: m.class.clone(),
                demand_rps: m.demand_rps,
                predicted_attainment: predicted.get(&(m.name.clone(), m.class.clone())).copied().unwrap_or(1.0),
                objective: objective(snapshot, &m.name, &m.class),
                observed: observed_counts.get(&(m.name.clone(), m.class.clone())).filter(|c| c.requests > 0).copied(),
            })
            .collect();
        Self {
            cycle: decision.cycle,
            observed_at_s: decision.observed_at_s,
            snapshot_id: decision.snapshot_id.clone(),
            status: plan.status,
            mode: plan.mode,
            solve_ms: plan.solve_ms,
            cost_usd_per_hour: plan.cost_usd_per_hour,
            current_cost_usd_per_hour: plan.current_cost_usd_per_hour,
            replicas: variants.iter().fold(ReplicaTotals::default(), |t, v| ReplicaTotals {
                desired: t.desired + v.desired,
                ready: t.ready + v.ready,
                booting: t.booting + v.booting,
                pending: t.pending + v.pending,
            }),
            variants,
            accelerators,
            models,
            slo,
            held_models: decision.held_models.keys().cloned().collect(),
        }
    }
}

fn objective(snapshot: &Snapshot, model: &str, class: &str) -> Option<f64> {
    let m = snapshot.models.iter().find(|m| m.name == model)?;
    let d = m.demands.iter().find(|d| snapshot.classes[d.class].name == class)?;
    crate::telemetry::metrics::objective_ratio(&d.slo)
}

/// A field that newer plans carry and this module passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extension {
    /// Per variant: `variants[].calibration` of the decision, else `plan.variants[].calibration`.
    Calibration,
    /// Per model: `forecasts.<model>` of the decision, else the first `plan.models[].forecast`
    /// of that model.
    Forecast,
}

/// The extension field `kind` for the variant or model `name` in a serialized decision; `None`
/// when the decision does not carry it (or it is `null`).
pub fn extension(decision: &serde_json::Value, kind: Extension, name: &str) -> Option<serde_json::Value> {
    let named = |list: &serde_json::Value, field: &str| -> Option<serde_json::Value> {
        list.as_array()?
            .iter()
            .filter(|e| e["name"] == name)
            .find_map(|e| e.get(field).filter(|v| !v.is_null()).cloned())
    };
    match kind {
        Extension::Calibration => {
            named(&decision["variants"], "calibration").or_else(|| named(&decision["plan"]["variants"], "calibration"))
        }
        Extension::Forecast => decision["forecasts"]
            .get(name)
            .filter(|v| !v.is_null())
            .cloned()
            .or_else(|| named(&decision["plan"]["models"], "forecast")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::observed;
    use crate::controller::{Memory, Stabilizer, decide};

    fn cycle(h: &History, n: u64, rps: f64) -> Decision {
        let o = observed(rps, 1, 1, n as f64 * 30.0);
        let d = decide(&o, None, &mut Memory::default(), n);
        h.record(&o, &d);
        d
    }

    #[test]
    fn the_ring_keeps_the_newest_cycles_and_pages_after_a_cycle() {
        let h = History::with_capacity(3);
        for n in 1..=5 {
            cycle(&h, n, 8.0);
        }
        let all = h.page(None);
        assert_eq!(all.capacity, 3);
        assert_eq!(all.records.iter().map(|r| r.cycle).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(h.page(Some(4)).records.iter().map(|r| r.cycle).collect::<Vec<_>>(), vec![5]);
        assert!(h.page(Some(5)).records.is_empty());
    }

    #[test]
    fn a_record_says_what_the_decision_and_plan_say() {
        let h = History::default();
        let d = cycle(&h, 1, 12.0);
        let r = &h.page(None).records[0];
        assert_eq!(r.snapshot_id, d.snapshot_id);
        assert_eq!(r.cost_usd_per_hour, d.plan.cost_usd_per_hour);
        for (rv, dv) in r.variants.iter().zip(&d.variants) {
            assert_eq!(
                (rv.name.as_str(), rv.desired, rv.current, rv.planned),
                (dv.name.as_str(), dv.desired, dv.current, dv.planned)
            );
        }
        // One model, one class: its demand is the load observed.
        assert_eq!(r.models.len(), 1);
        assert!((r.models[0].demand_rps - 12.0).abs() < 1e-9, "{:?}", r.models);
        let slo = &r.slo[0];
        assert_eq!((slo.model.as_str(), slo.class.as_str()), ("chat", "premium"));
        // p95 TTFT and mean ITL: the objective is the stricter, 0.95.
        assert_eq!(slo.objective, Some(0.95));
        assert!((0.0..=1.0).contains(&slo.predicted_attainment));
        assert_eq!(slo.observed, None, "nothing staged, nothing observed");
        // Each accelerator's current GPUs: 1 replica × 4 GPUs on both types.
        assert!(r.accelerators.iter().all(|a| a.current_gpus == 4), "{:?}", r.accelerators);
        let desired: u32 = d.variants.iter().map(|v| v.desired).sum();
        let ready: u32 = d.variants.iter().map(|v| v.pods.ready).sum();
        assert_eq!(
            (r.replicas.desired, r.replicas.ready, r.replicas.booting, r.replicas.pending),
            (desired, ready, 0, 0)
        );
        assert_eq!(r.variants[0].calibration, None, "no latency observed, no correction");
        // The decision's forecast of the model's load, as the console draws it.
        let forecast = r.models[0].forecast.as_ref().expect("a forecast");
        assert!((forecast["expected_rps"].as_f64().expect("a number") - 12.0).abs() < 1e-9, "{forecast}");
        assert!(forecast["upper_rps"].as_f64().is_some() && forecast["lower_rps"].as_f64().is_some(), "{forecast}");
    }

    #[test]
    fn staged_observations_go_into_the_next_record_only() {
        let h = History::default();
        let key = ("chat".to_string(), "premium".to_string());
        h.stage_observed(&BTreeMap::from([(key.clone(), ObservedAttainment::of(3, 4))]));
        h.stage_observed(&BTreeMap::from([(key.clone(), ObservedAttainment::of(5, 6))]));
        cycle(&h, 1, 8.0);
        cycle(&h, 2, 8.0);
        let records = h.page(None).records;
        assert_eq!(records[0].slo[0].observed, Some(ObservedAttainment { requests: 10, met: 8, attainment: 0.8 }));
        assert_eq!(records[1].slo[0].observed, None);
    }

    /// A cluster that is not the simulator (as Kubernetes is not): observations, nothing staged.
    struct Steady(u64);

    impl crate::controller::Cluster for Steady {
        async fn observe(&mut self) -> Result<Observed, crate::controller::ClusterError> {
            self.0 += 1;
            Ok(observed(8.0, 1, 1, self.0 as f64 * 30.0))
        }

        async fn apply(&mut self, _: &Decision) -> crate::controller::Applied {
            crate::controller::Applied::default()
        }
    }

    #[tokio::test]
    async fn the_loop_records_every_published_cycle_whatever_the_cluster() {
        let shared = crate::controller::Shared::new();
        let (_leader_tx, leader) = tokio::sync::watch::channel(true);
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let settings =
            crate::controller::run::LoopSettings { interval: std::time::Duration::from_millis(1), max_cycles: Some(3) };
        crate::controller::run::run(Steady(0), shared.clone(), settings, Stabilizer::default(), leader, stop).await;
        let records = shared.history.page(None).records;
        assert_eq!(records.iter().map(|r| r.cycle).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(records[2].observed_at_s, 90.0);
        assert!(records.iter().all(|r| r.slo.iter().all(|s| s.observed.is_none())), "only a simulator observes");
        let latest = shared.decision().expect("a decision");
        assert_eq!(records[2].snapshot_id, latest.snapshot_id);
    }

    #[test]
    fn calibration_and_forecast_pass_through_when_a_decision_carries_them() {
        let decision = serde_json::json!({
            "variants": [{"name": "a", "calibration": {"ttft_factor": 1.3}}, {"name": "b"}],
            "plan": {
                "variants": [{"name": "b", "calibration": {"itl_factor": 0.9}}, {"name": "c", "calibration": null}],
                "models": [{"name": "m", "class": "x", "forecast": {"expected_rps": 4.0}}]
            },
            "forecasts": {"n": {"expected_rps": 2.0, "lower_rps": 1.0, "upper_rps": 3.0}}
        });
        assert_eq!(extension(&decision, Extension::Calibration, "a"), Some(serde_json::json!({"ttft_factor": 1.3})));
        assert_eq!(extension(&decision, Extension::Calibration, "b"), Some(serde_json::json!({"itl_factor": 0.9})));
        assert_eq!(extension(&decision, Extension::Calibration, "c"), None);
        assert_eq!(extension(&decision, Extension::Forecast, "m"), Some(serde_json::json!({"expected_rps": 4.0})));
        assert_eq!(extension(&decision, Extension::Forecast, "n").and_then(|f| f["upper_rps"].as_f64()), Some(3.0));
        assert_eq!(extension(&decision, Extension::Forecast, "z"), None);
    }
}
