//! The cluster simulator (DESIGN §2, "simulator: simulated cluster → same loop → SLO attainment
//! report"): replay a request trace through a simulated fleet with a scaling policy in the loop.
//!
//! Pure and deterministic: traces come in as text or values (the CLI reads files), the event
//! queue breaks time ties by insertion order, and no decision iterates a hash map.

pub mod compliance;
pub mod engine;
pub mod live;
pub mod policy;
pub mod report;
pub mod trace;

use std::collections::BTreeMap;

pub use engine::{SimConfig, SimOutcome, run};
pub use policy::{PolicyKind, PolicySettings};
pub use trace::{Request, TraceError};

use crate::scenario::{Scenario, Snapshot};

/// SLO attainment of one class (all its models).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attainment {
    pub met: u64,
    pub total: u64,
}

impl Attainment {
    /// Share of requests meeting both targets (1 when there were none).
    pub fn share(&self) -> f64 {
        if self.total == 0 { 1.0 } else { self.met as f64 / self.total as f64 }
    }
}

/// One row of the comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub policy: String,
    pub requests: u64,
    pub attainment: Attainment,
    /// Per class name.
    pub by_class: BTreeMap<String, Attainment>,
    /// Compliant (5-minute window, class) cells: the declared statistic met its target
    /// ([`compliance`]).
    pub windows: Attainment,
    /// The same per class name.
    pub windows_by_class: BTreeMap<String, Attainment>,
    pub gpu_hours: f64,
    pub cost_usd: f64,
    pub replica_changes: u32,
    pub pending_replica_s: f64,
    pub dropped: u64,
    /// Neither dropped nor finished when the simulation stopped.
    pub unfinished: u64,
    pub ttft_p95_ms: f64,
    pub itl_p95_ms: f64,
    /// Σ busy time / Σ ready time over all replicas.
    pub busy_fraction: f64,
    /// Mean requests in a batch over ready time / B: how full the batches ran.
    pub batch_fraction: f64,
}

/// Whether a finished request met both of its class's targets. Each request is held to the
/// target value whatever the statistic: attainment is the share that met it.
pub fn meets_slo(snapshot: &Snapshot, request: &Request, outcome: &engine::RequestOutcome) -> bool {
    let slo = &snapshot.models[request.model].demands[request.demand].slo;
    let (Some(ttft), Some(itl)) = (outcome.ttft_ms(), outcome.itl_ms(request.output_tokens)) else {
        return false;
    };
    slo.ttft.is_none_or(|t| ttft <= t.ms) && slo.itl.is_none_or(|t| itl <= t.ms)
}

/// The q-quantile (nearest rank) of unsorted values; 0 for none.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Reduce one run to its comparison row.
pub fn summarize(policy: &str, snapshot: &Snapshot, requests: &[Request], outcome: &SimOutcome) -> Summary {
    let mut by_class: BTreeMap<String, Attainment> = BTreeMap::new();
    let mut all = Attainment::default();
    let (mut dropped, mut unfinished) = (0, 0);
    let (mut ttfts, mut itls) = (Vec::new(), Vec::new());
    for (r, o) in requests.iter().zip(&outcome.requests) {
        let class = &snapshot.classes[snapshot.models[r.model].demands[r.demand].class].name;
        let met = meets_slo(snapshot, r, o);
        let entry = by_class.entry(class.clone()).or_default();
        entry.total += 1;
        all.total += 1;
        if met {
            entry.met += 1;
            all.met += 1;
        }
        if o.dropped {
            dropped += 1;
        } else if o.done_s.is_none() {
            unfinished += 1;
        }
        if let Some(t) = o.ttft_ms() {
            ttfts.push(t);
        }
        if let Some(t) = o.itl_ms(r.output_tokens).filter(|_| r.output_tokens > 1) {
            itls.push(t);
        }
    }
    let busy = busy_fractions(snapshot, outcome);
    let checks =
        compliance::window_compliance(snapshot, requests, &outcome.requests, compliance::WINDOW_S, outcome.horizon_s);
    let (windows, windows_by_class) = compliance::compliance(&checks);
    Summary {
        policy: policy.to_string(),
        requests: requests.len() as u64,
        attainment: all,
        by_class,
        windows,
        windows_by_class,
        gpu_hours: outcome.gpu_hours.iter().sum(),
        cost_usd: outcome.cost_usd,
        replica_changes: outcome.replica_changes,
        pending_replica_s: outcome.pending_replica_s,
        dropped,
        unfinished,
        ttft_p95_ms: quantile(&mut ttfts, 0.95),
        itl_p95_ms: quantile(&mut itls, 0.95),
        busy_fraction: busy.0,
        batch_fraction: busy.1,
    }
}

/// (Σ busy / Σ ready time, Σ batch-request time / Σ B·ready time) over every replica, up to
/// when it left or the simulation ended.
fn busy_fractions(snapshot: &Snapshot, outcome: &SimOutcome) -> (f64, f64) {
    let (mut busy, mut batch, mut ready, mut slots) = (0.0, 0.0, 0.0, 0.0);
    for r in &outcome.replicas {
        if let Some(from) = r.ready_s {
            let span = r.released_s.unwrap_or(outcome.end_s) - from;
            busy += r.busy_s;
            batch += r.batch_request_s;
            ready += span;
            slots += span * f64::from(snapshot.variants[r.variant].max_batch);
        }
    }
    let share = |x: f64, of: f64| if of > 0.0 { x / of } else { 0.0 };
    (share(busy, ready), share(batch, slots))
}

/// Run one policy and summarize it (`snapshot` is `scenario`, validated).
pub fn simulate(
    kind: PolicyKind,
    scenario: &Scenario,
    snapshot: &Snapshot,
    requests: &[Request],
    config: &SimConfig,
    settings: &PolicySettings,
    progress: &mut dyn FnMut(f64),
) -> (Summary, SimOutcome) {
    // The loop looks ahead to when its next decision can correct this one.
    let mut settings = settings.clone();
    settings.controls.interval_s = config.control_period_s;
    let mut policy = policy::build(kind, scenario, snapshot, &settings);
    let outcome = run(snapshot, requests, policy.as_mut(), config, progress);
    (summarize(policy.name(), snapshot, requests, &outcome), outcome)
}

#[cfg(test)]
mod fidelity;
