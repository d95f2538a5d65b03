//! Scaling policies in the loop: each control period a policy sees lagged metric samples and
//! returns the replicas it wants per variant.
//!
//! - `static`: the scenario's current replicas, forever.
//! - `allot`: the production controller's decision ([`crate::controller::decide`]) on the
//!   scenario with the observed load and running replicas.
//! - `hpa`: Kubernetes HPA's replica formula (peers.md §2) per deployed variant, on queue depth
//!   or KV utilization, with the 10 % tolerance and the default behavior windows.
//! - `keda`: the same as an External `AverageValue` metric, plus activation and scale to zero
//!   (peers.md §3).
//! - `wva`: WVA's unlimited mode (wva.md §3): every deployed variant sized on its own, on its
//!   own accelerator, for its share of the observed rate, blind to the inventory.

use std::collections::{BTreeMap, VecDeque};

use super::engine::Sample;
use crate::analyze::fleet;
use crate::analyze::queue::Workload;
use crate::controller::evidence::{LatencySummary, ServedStats};
use crate::controller::{Behavior, Controls, Decision, Evidence, Memory, Observed, PodCounts};
use crate::scenario::format::{HistogramBucketSpec, HistogramSpec, TokenCountSpec, TokenDistributionSpec};
use crate::scenario::{Scenario, Snapshot};

/// What a policy sees at a control tick.
pub struct Observation<'a> {
    pub now_s: f64,
    pub snapshot: &'a Snapshot,
    /// Replicas asked for now (pending + booting + ready), per variant.
    pub desired: &'a [u32],
    /// Samples old enough to be visible (metric lag applied), oldest first.
    pub samples: &'a [Sample],
    /// Averaging window for rates, seconds.
    pub window_s: f64,
}

impl Observation<'_> {
    /// The newest visible sample.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.last()
    }

    /// Visible samples within the averaging window ending at the newest one.
    pub fn window(&self) -> &[Sample] {
        let Some(last) = self.samples.last() else { return &[] };
        let from = last.t_s - self.window_s;
        let start = self.samples.partition_point(|s| s.t_s <= from + 1e-9);
        &self.samples[start..]
    }

    fn window_span_s(&self) -> f64 {
        self.window().iter().map(|s| s.interval_s).sum()
    }

    /// Observed arrival rate of one (model, demand), req/s; `None` without data.
    pub fn demand_rps(&self, model: usize, demand: usize) -> Option<f64> {
        let span = self.window_span_s();
        if span <= 0.0 {
            return None;
        }
        let n: u32 = self.window().iter().map(|s| s.demands[model][demand].arrivals).sum();
        Some(f64::from(n) / span)
    }

    /// Observed mean tokens (prompt, output) of one (model, demand); `None` when nothing arrived.
    pub fn demand_token_means(&self, model: usize, demand: usize) -> Option<(f64, f64)> {
        let (mut n, mut input, mut output) = (0u64, 0u64, 0u64);
        for s in self.window() {
            let d = &s.demands[model][demand];
            n += u64::from(d.arrivals);
            input += d.input_tokens;
            output += d.output_tokens;
        }
        (n > 0).then(|| (input as f64 / n as f64, output as f64 / n as f64))
    }

    /// What variant `v`'s servers measured over the window: the latency of the requests it
    /// finished, the load it carried and how saturated it ran; `None` without samples.
    pub fn served_stats(&self, v: usize) -> Option<ServedStats> {
        let window = self.window();
        let span = self.window_span_s();
        if window.is_empty() || span <= 0.0 {
            return None;
        }
        let model = self.snapshot.variants[v].model;
        let (mut ttft, mut itl) = (Vec::new(), Vec::new());
        let (mut input, mut output) = (0u64, 0u64);
        let (mut ready, mut arrivals, mut saturated) = (0.0, 0u64, 0usize);
        for s in window {
            let vs = &s.variants[v];
            ready += f64::from(vs.ready);
            arrivals += u64::from(vs.arrivals);
            // Saturated: requests wait although every batch slot is taken.
            if vs.slots > 0 && vs.waiting > 0 && f64::from(vs.running) >= 0.95 * f64::from(vs.slots) {
                saturated += 1;
            }
            for f in s.finished[model].iter().filter(|f| f.variant == v) {
                ttft.push(1e3 * f.ttft_s);
                if let Some(x) = f.itl_s {
                    itl.push(1e3 * x);
                }
                input += u64::from(f.input_tokens);
                output += u64::from(f.output_tokens);
            }
        }
        let finished = ttft.len() as u64;
        let latest = &window[window.len() - 1].variants[v];
        let mean = |total: u64| (finished > 0).then(|| total as f64 / finished as f64);
        Some(ServedStats {
            window_s: span,
            ready_replicas: ready / window.len() as f64,
            arrival_rps: arrivals as f64 / span,
            completion_rps: finished as f64 / span,
            finished,
            input_tokens: mean(input),
            output_tokens: mean(output),
            ttft: LatencySummary::of(&mut ttft),
            itl: LatencySummary::of(&mut itl),
            waiting_per_replica: f64::from(latest.waiting) / f64::from(latest.ready.max(1)),
            saturated_fraction: saturated as f64 / window.len() as f64,
            kv_usage_max: None,
        })
    }
}

/// A token-count spec with its mean moved to `mean`: a distribution keeps its shape.
fn rescaled(spec: &TokenCountSpec, mean: f64) -> TokenCountSpec {
    match spec {
        TokenCountSpec::Mean(_) => TokenCountSpec::Mean(mean),
        TokenCountSpec::Distribution(d) => {
            let Some(old) = spec.mean_hint().filter(|m| *m > 0.0) else { return TokenCountSpec::Mean(mean) };
            let f = mean / old;
            let scale = |v: Option<f64>| v.map(|x| x * f);
            TokenCountSpec::Distribution(TokenDistributionSpec {
                mean: scale(d.mean),
                p50: scale(d.p50),
                p90: scale(d.p90),
                p95: scale(d.p95),
                p99: scale(d.p99),
                max: scale(d.max),
                histogram: d.histogram.as_ref().map(|h| HistogramSpec {
                    buckets: h.buckets.iter().map(|b| HistogramBucketSpec { le: b.le * f, count: b.count }).collect(),
                    count: h.count,
                    sum: h.sum.map(|x| x * f),
                }),
                ..d.clone()
            })
        }
    }
}

/// A scaling policy.
pub trait Policy {
    fn name(&self) -> &str;
    /// Replicas wanted per variant (indexed like `Snapshot::variants`).
    fn decide(&mut self, obs: &Observation<'_>) -> Vec<u32>;
    /// Planned req/s per variant, for a router that follows the plan (`optimizer.routing:
    /// weighted`); None (the default) routes least-loaded.
    fn routing_weights(&self, _snapshot: &Snapshot) -> Option<Vec<f64>> {
        None
    }
}

/// Which policy, by name (as on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyKind {
    Allot,
    Hpa,
    Keda,
    Wva,
    Static,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 5] =
        [PolicyKind::Allot, PolicyKind::Hpa, PolicyKind::Keda, PolicyKind::Wva, PolicyKind::Static];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Allot => "allot",
            PolicyKind::Hpa => "hpa",
            PolicyKind::Keda => "keda",
            PolicyKind::Wva => "wva",
            PolicyKind::Static => "static",
        }
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown policy {s:?}; expected one of allot, hpa, keda, wva, static"))
    }
}

/// The metric HPA and KEDA scale on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleMetric {
    /// Requests waiting per replica (vLLM `num_requests_waiting`, plus the gateway's queue).
    Queue,
    /// KV-cache utilization, approximated by batch occupancy (running / B).
    Kv,
}

/// Settings of the policies.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySettings {
    pub metric: ScaleMetric,
    /// Target value per replica: waiting requests (queue) or a fraction (kv).
    pub target: f64,
    /// HPA tolerance (0.1 = ±10 %).
    pub tolerance: f64,
    /// Scale-down stabilization window of every autoscaler (HPA's default: 300 s).
    pub scale_down_window_s: f64,
    /// KEDA: activity above this keeps a variant active.
    pub activation_threshold: f64,
    /// KEDA: idle this long before scaling to zero, seconds (default 300).
    pub cooldown_s: f64,
    /// Allot's loop controls (calibration, forecast, panic, scale to zero, schedules).
    pub controls: Controls,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            metric: ScaleMetric::Kv,
            target: 0.7,
            tolerance: 0.1,
            scale_down_window_s: 300.0,
            activation_threshold: 0.0,
            cooldown_s: 300.0,
            controls: Controls::default(),
        }
    }
}

/// Build a policy for a scenario (`snapshot` is the scenario, validated).
pub fn build(kind: PolicyKind, scenario: &Scenario, snapshot: &Snapshot, settings: &PolicySettings) -> Box<dyn Policy> {
    match kind {
        PolicyKind::Static => Box::new(Static::current(snapshot)),
        PolicyKind::Allot => {
            let mut behavior = Behavior::default();
            behavior.scale_down.stabilization_window_seconds =
                settings.scale_down_window_s.round().clamp(0.0, 1e9) as u32;
            Box::new(Allot {
                scenario: scenario.clone(),
                memory: Memory::new(behavior).with_controls(settings.controls.clone()),
                previous: None,
                cycle: 0,
                seen_until_s: f64::NEG_INFINITY,
            })
        }
        PolicyKind::Hpa => Box::new(Hpa::new(snapshot, settings.clone(), false)),
        PolicyKind::Keda => Box::new(Hpa::new(snapshot, settings.clone(), true)),
        PolicyKind::Wva => Box::new(Wva { managed: deployed_variants(snapshot) }),
    }
}

/// Fixed replicas.
pub struct Static(Vec<u32>);

impl Static {
    /// The scenario's `current_replicas`, forever.
    pub fn current(snapshot: &Snapshot) -> Self {
        Self(snapshot.variants.iter().map(|v| v.current_replicas).collect())
    }
}

impl Policy for Static {
    fn name(&self) -> &str {
        "static"
    }
    fn decide(&mut self, _: &Observation<'_>) -> Vec<u32> {
        self.0.clone()
    }
}

/// Scale-down stabilization: the result is never below the highest recommendation of the last
/// `window_s` (nor above the current count when scaling down). Scale-up is immediate.
struct DownWindow {
    window_s: f64,
    history: Vec<VecDeque<(f64, u32)>>,
}

impl DownWindow {
    /// The fleet at t = 0 counts as a recommendation made then: a policy taking over a running
    /// fleet does not scale it down before its window has seen the load.
    fn new(snapshot: &Snapshot, window_s: f64) -> Self {
        let history = snapshot.variants.iter().map(|v| VecDeque::from([(0.0, v.current_replicas)])).collect();
        Self { window_s, history }
    }

    fn apply(&mut self, v: usize, now_s: f64, current: u32, recommended: u32) -> u32 {
        let h = &mut self.history[v];
        h.push_back((now_s, recommended));
        while h.front().is_some_and(|&(t, _)| t < now_s - self.window_s) {
            h.pop_front();
        }
        if recommended >= current {
            return recommended;
        }
        let highest = h.iter().map(|&(_, r)| r).max().unwrap_or(recommended);
        highest.min(current)
    }
}

/// Allot in the loop: the production controller's decision ([`crate::controller::decide`]:
/// holds, plan, HPA-style stabilization, re-plan around held variants) on what a cluster would
/// show — the same code `allot serve` runs every cycle.
pub struct Allot {
    scenario: Scenario,
    memory: Memory,
    previous: Option<Decision>,
    cycle: u64,
    /// Time of the newest sample already observed (start-ups are reported once).
    seen_until_s: f64,
}

impl Allot {
    /// The loop memory as it stands (tests: the calibration and forecasts it learned).
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The last decision.
    pub fn last_decision(&self) -> Option<&Decision> {
        self.previous.as_ref()
    }
}

impl Policy for Allot {
    fn name(&self) -> &str {
        "allot"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Vec<u32> {
        let Some(observed) = observed_cluster(obs, &self.scenario, self.seen_until_s) else {
            return obs.desired.to_vec();
        };
        self.seen_until_s = obs.latest().map_or(self.seen_until_s, |s| s.t_s);
        self.cycle += 1;
        let decision = crate::controller::decide(&observed, self.previous.as_ref(), &mut self.memory, self.cycle);
        let wanted = decision.variants.iter().map(|v| v.desired).collect();
        self.previous = Some(decision);
        wanted
    }

    fn routing_weights(&self, snapshot: &Snapshot) -> Option<Vec<f64>> {
        let plan = &self.previous.as_ref()?.plan;
        Some(
            snapshot
                .variants
                .iter()
                .map(|v| plan.variants.iter().find(|p| p.name == v.name).map_or(0.0, |p| p.load_rps))
                .collect(),
        )
    }
}

/// The simulated cluster as a controller observes it at a tick: the scenario with the observed
/// load (rates and mean tokens over the window) and running replicas (ready + booting), pods by
/// state (the engine's Pending replicas found no GPU: the scheduler's Unschedulable), and every
/// model held while no sample is visible; as evidence, what each variant's servers measured over
/// the window, the gateway's queue, and the start-ups seen in samples after `seen_until_s`.
/// `None` if the observed scenario does not validate.
pub fn observed_cluster(obs: &Observation<'_>, scenario: &Scenario, seen_until_s: f64) -> Option<Observed> {
    let snapshot = obs.snapshot;
    let latest = obs.latest();
    let mut scenario = scenario.clone();
    let mut stale_models = BTreeMap::new();
    let mut metric_age_s = BTreeMap::new();
    for model in &snapshot.models {
        if let Some(sample) = latest {
            metric_age_s.insert(model.name.clone(), obs.now_s - sample.t_s);
        } else {
            stale_models.insert(model.name.clone(), "no metrics yet".to_string());
        }
    }
    for load in &mut scenario.load {
        let Some(m) = snapshot.models.iter().position(|x| x.name == load.model) else { continue };
        let Some(k) = snapshot.models[m].demands.iter().position(|d| snapshot.classes[d.class].name == load.class)
        else {
            continue;
        };
        if let Some(rps) = obs.demand_rps(m, k) {
            load.arrival_rate_rps = rps;
        }
        if let Some((input, output)) = obs.demand_token_means(m, k) {
            // The observed means in the declared shape (scaled when a distribution was given).
            load.input_tokens = rescaled(&load.input_tokens, input);
            load.output_tokens = rescaled(&load.output_tokens, output);
        }
    }
    let mut pods = vec![PodCounts::default(); snapshot.variants.len()];
    if let Some(sample) = latest {
        for (v, s) in sample.variants.iter().enumerate() {
            pods[v] = PodCounts { ready: s.ready, booting: s.booting, unschedulable: s.pending, gated: 0 };
        }
    }
    for spec in &mut scenario.variants {
        if let Ok(i) = snapshot.variants.binary_search_by(|v| v.name.cmp(&spec.name)) {
            spec.current_replicas = if latest.is_some() { pods[i].current() } else { obs.desired[i] };
        }
    }
    let mut evidence = Evidence::default();
    for (v, variant) in snapshot.variants.iter().enumerate() {
        if let Some(stats) = obs.served_stats(v) {
            evidence.served.insert(variant.name.clone(), stats);
        }
        let started: Vec<f64> = obs
            .samples
            .iter()
            .rev()
            .take_while(|s| s.t_s > seen_until_s)
            .flat_map(|s| s.variants[v].startups_s.iter().copied())
            .collect();
        if !started.is_empty() {
            evidence.startups_s.insert(variant.name.clone(), started);
        }
    }
    if let Some(sample) = latest {
        for (m, model) in snapshot.models.iter().enumerate() {
            evidence.backlog.insert(model.name.clone(), f64::from(sample.backlog[m]));
        }
    }
    let snapshot = crate::scenario::validate(&scenario).ok()?;
    Some(Observed {
        at_s: obs.now_s,
        scenario,
        snapshot,
        pods,
        stale_models,
        metric_age_s,
        warnings: Vec::new(),
        tuning: None,
        pending: Default::default(),
        evidence,
    })
}

/// Variants an HPA/KEDA/WVA user would have deployed: those running at the start, and for a model
/// with none, its cheapest variant per replica-hour (first by name on ties).
pub fn deployed_variants(snapshot: &Snapshot) -> Vec<bool> {
    let mut managed: Vec<bool> = snapshot.variants.iter().map(|v| v.current_replicas > 0).collect();
    for m in 0..snapshot.models.len() {
        if snapshot.variants.iter().any(|v| v.model == m && v.current_replicas > 0) {
            continue;
        }
        let cheapest = snapshot
            .variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.model == m)
            .min_by(|(_, a), (_, b)| {
                a.replica_cost_usd_per_hour(&snapshot.accelerators)
                    .total_cmp(&b.replica_cost_usd_per_hour(&snapshot.accelerators))
            })
            .map(|(i, _)| i);
        if let Some(i) = cheapest {
            managed[i] = true;
        }
    }
    managed
}

/// HPA (and KEDA, which drives an HPA) per deployed variant.
pub struct Hpa {
    settings: PolicySettings,
    managed: Vec<bool>,
    keda: bool,
    down: DownWindow,
    last_active_s: Vec<f64>,
}

impl Hpa {
    fn new(snapshot: &Snapshot, settings: PolicySettings, keda: bool) -> Self {
        let down = DownWindow::new(snapshot, settings.scale_down_window_s);
        Self {
            settings,
            managed: deployed_variants(snapshot),
            keda,
            down,
            last_active_s: vec![0.0; snapshot.variants.len()],
        }
    }

    /// Σ of the metric over the variant's ready replicas, and its activity (KEDA).
    fn usage(&self, obs: &Observation<'_>, sample: &Sample, v: usize) -> (f64, f64) {
        let s = &sample.variants[v];
        let model = obs.snapshot.variants[v].model;
        // The gateway's queue for the model, split over its managed variants.
        let siblings = (0..self.managed.len())
            .filter(|&u| self.managed[u] && obs.snapshot.variants[u].model == model)
            .count()
            .max(1);
        let backlog = f64::from(sample.backlog[model]) / siblings as f64;
        let usage = match self.settings.metric {
            ScaleMetric::Queue => f64::from(s.waiting) + backlog,
            ScaleMetric::Kv => {
                let b = f64::from(obs.snapshot.variants[v].max_batch.max(1));
                f64::from(s.running) / b + backlog / b
            }
        };
        let activity = f64::from(s.running + s.waiting + s.arrivals) + backlog;
        (usage, activity)
    }

    /// HPA's replica calculation (peers.md §2.1) for a Pods metric, or KEDA's External
    /// `AverageValue` (which ignores pod states).
    fn recommend(&self, usage: f64, current: u32, ready: u32) -> u32 {
        let (target, tol) = (self.settings.target, self.settings.tolerance);
        if self.keda {
            if current == 0 {
                return (usage / target).ceil() as u32;
            }
            let ratio = usage / (target * f64::from(current));
            if (ratio - 1.0).abs() <= tol {
                return current;
            }
            return (usage / target).ceil() as u32;
        }
        if ready == 0 {
            return current; // no pod reports the metric
        }
        let ratio = usage / (target * f64::from(ready));
        let unready = current.saturating_sub(ready);
        if unready == 0 {
            if (ratio - 1.0).abs() <= tol {
                return current;
            }
            return (ratio * f64::from(ready)).ceil() as u32;
        }
        if ratio <= 1.0 {
            // Scale-down: unready pods are left out; within tolerance holds.
            if (ratio - 1.0).abs() <= tol {
                return current;
            }
            let new = (ratio * f64::from(ready)).ceil() as u32;
            return new.min(current);
        }
        // Scale-up with unready pods: they count as using 0.
        let ratio2 = usage / (target * f64::from(current));
        if (ratio2 - 1.0).abs() <= tol || ratio2 < 1.0 {
            return current;
        }
        ((ratio2 * f64::from(current)).ceil() as u32).max(current)
    }
}

impl Policy for Hpa {
    fn name(&self) -> &str {
        if self.keda { "keda" } else { "hpa" }
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Vec<u32> {
        let Some(sample) = obs.latest() else { return obs.desired.to_vec() };
        let mut out = obs.desired.to_vec();
        for (v, slot) in out.iter_mut().enumerate() {
            if !self.managed[v] {
                *slot = 0;
                continue;
            }
            let current = obs.desired[v];
            let (usage, activity) = self.usage(obs, sample, v);
            let max = obs.snapshot.variants[v].max_replicas;
            if self.keda {
                if activity > self.settings.activation_threshold {
                    self.last_active_s[v] = obs.now_s;
                }
                if current == 0 {
                    // KEDA owns 0 → 1 on activation.
                    *slot = u32::from(activity > self.settings.activation_threshold).min(max);
                    continue;
                }
                if obs.now_s - self.last_active_s[v] >= self.settings.cooldown_s {
                    *slot = 0;
                    continue;
                }
            }
            let ready = sample.variants[v].ready;
            let rec = self.recommend(usage, current, ready).clamp(1, max.max(1));
            // Default behavior: scale-up at most max(+4, ×2) per period, scale-down stabilized.
            let up_limit = (current + 4).max(2 * current);
            let stabilized = self.down.apply(v, obs.now_s, current, rec.min(up_limit));
            *slot = stabilized.min(max);
        }
        out
    }
}

/// WVA's unlimited mode: each deployed variant sized alone for its share of the model's rate.
pub struct Wva {
    managed: Vec<bool>,
}

impl Policy for Wva {
    fn name(&self) -> &str {
        "wva"
    }

    fn decide(&mut self, obs: &Observation<'_>) -> Vec<u32> {
        if obs.window().is_empty() {
            return obs.desired.to_vec();
        }
        let snap = obs.snapshot;
        let mut out = obs.desired.to_vec();
        for (v, variant) in snap.variants.iter().enumerate() {
            if !self.managed[v] {
                out[v] = 0;
                continue;
            }
            // Share of the model's traffic: the router balances by load, so by replicas.
            let siblings: Vec<usize> = (0..snap.variants.len())
                .filter(|&u| self.managed[u] && snap.variants[u].model == variant.model)
                .collect();
            let total: u32 = siblings.iter().map(|&u| obs.desired[u]).sum();
            let share =
                if total == 0 { 1.0 / siblings.len() as f64 } else { f64::from(obs.desired[v]) / f64::from(total) };
            let mut needed = 0.0;
            let mut feasible = true;
            for (k, demand) in snap.models[variant.model].demands.iter().enumerate() {
                let rps = obs.demand_rps(variant.model, k).unwrap_or(0.0) * share;
                if rps <= 0.0 {
                    continue;
                }
                let mut observed = demand.clone();
                if let Some((input, output)) = obs.demand_token_means(variant.model, k) {
                    // WVA sizes on mean tokens: the declared shapes at the observed means.
                    let w = &demand.workload;
                    observed.workload = Workload {
                        input: w.input.scaled(input / w.input.mean().max(1e-9)),
                        output: w.output.scaled(output / w.output.mean().max(1e-9)),
                        ..*w
                    };
                }
                let cap = fleet::capacity(variant, &observed, snap.settings.max_utilization);
                if cap.rps <= 0.0 {
                    feasible = false;
                    break;
                }
                needed += rps / cap.rps;
            }
            if feasible {
                // WVA keeps at least one replica (scale to zero off).
                out[v] = (needed.ceil() as u32).clamp(1, variant.max_replicas.max(1));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::Role;
    use crate::sim::engine::{DemandSample, VariantSample};
    use crate::sim::fidelity::{one_replica, one_replica_scenario};

    fn sample(t_s: f64, arrivals: u32, waiting: u32, running: u32, ready: u32) -> Sample {
        Sample {
            t_s,
            interval_s: 5.0,
            variants: vec![VariantSample {
                desired: ready,
                ready,
                waiting,
                running,
                slots: 64 * ready,
                arrivals,
                ..VariantSample::default()
            }],
            demands: vec![vec![DemandSample {
                arrivals,
                input_tokens: 512 * u64::from(arrivals),
                output_tokens: 128 * u64::from(arrivals),
            }]],
            backlog: vec![0],
            finished: vec![Vec::new()],
        }
    }

    fn decide(policy: &mut dyn Policy, snapshot: &Snapshot, now_s: f64, desired: u32, samples: &[Sample]) -> u32 {
        let desired = [desired];
        let obs = Observation { now_s, snapshot, desired: &desired, samples, window_s: 60.0 };
        policy.decide(&obs)[0]
    }

    #[test]
    fn hpa_follows_the_replica_formula_with_its_tolerance() {
        let (scenario, snapshot) = (
            one_replica_scenario("llama2-70b/h100-80gb/tp4", 64, Role::Both, 4),
            one_replica("llama2-70b/h100-80gb/tp4", 64, Role::Both, 4),
        );
        let settings = PolicySettings { metric: ScaleMetric::Queue, target: 4.0, ..PolicySettings::default() };
        let mut hpa = build(PolicyKind::Hpa, &scenario, &snapshot, &settings);
        // 4 ready pods, 17 waiting: ratio 17/16 is within 10 %: hold.
        assert_eq!(decide(hpa.as_mut(), &snapshot, 30.0, 4, &[sample(15.0, 10, 17, 100, 4)]), 4);
        // 40 waiting: ratio 2.5 → ceil(2.5·4) = 10, capped by the +4/×2 rate limit at 8.
        assert_eq!(decide(hpa.as_mut(), &snapshot, 60.0, 4, &[sample(45.0, 10, 40, 100, 4)]), 8);
        // Nothing waiting: the formula says 1, but the 300 s window remembers 8.
        assert_eq!(decide(hpa.as_mut(), &snapshot, 90.0, 8, &[sample(75.0, 10, 0, 100, 8)]), 8);
        assert_eq!(decide(hpa.as_mut(), &snapshot, 400.0, 8, &[sample(385.0, 10, 0, 100, 8)]), 1);
    }

    #[test]
    fn keda_scales_to_zero_after_its_cooldown_and_wakes_on_activity() {
        let (scenario, snapshot) = (
            one_replica_scenario("llama2-70b/h100-80gb/tp4", 64, Role::Both, 1),
            one_replica("llama2-70b/h100-80gb/tp4", 64, Role::Both, 1),
        );
        let mut keda = build(PolicyKind::Keda, &scenario, &snapshot, &PolicySettings::default());
        let idle = |t| sample(t, 0, 0, 0, 1);
        assert_eq!(decide(keda.as_mut(), &snapshot, 200.0, 1, &[idle(185.0)]), 1);
        assert_eq!(decide(keda.as_mut(), &snapshot, 310.0, 1, &[idle(295.0)]), 0);
        let mut busy = sample(325.0, 3, 0, 0, 0);
        busy.backlog = vec![3];
        assert_eq!(decide(keda.as_mut(), &snapshot, 340.0, 0, &[busy]), 1);
        // HPA never goes below one replica.
        let mut hpa = build(PolicyKind::Hpa, &scenario, &snapshot, &PolicySettings::default());
        assert_eq!(decide(hpa.as_mut(), &snapshot, 400.0, 1, &[idle(385.0)]), 1);
    }

    #[test]
    fn allot_holds_without_metrics_and_plans_on_the_observed_rate() {
        let (scenario, snapshot) = (
            one_replica_scenario("llama2-70b/h100-80gb/tp4", 64, Role::Both, 3),
            one_replica("llama2-70b/h100-80gb/tp4", 64, Role::Both, 3),
        );
        let mut allot = build(PolicyKind::Allot, &scenario, &snapshot, &PolicySettings::default());
        assert_eq!(decide(allot.as_mut(), &snapshot, 30.0, 3, &[]), 3);
        // 120 requests per 5 s = 24 req/s of 512/128 tokens, about 5.8 req/s per replica at 90 %
        // of saturation: five replicas.
        let busy: Vec<Sample> = (1..=12).map(|i| sample(5.0 * f64::from(i), 120, 0, 10, 3)).collect();
        let up = decide(allot.as_mut(), &snapshot, 75.0, 3, &busy);
        assert_eq!(up, 5);
        // Idle: the plan drops to zero, but only once the 300 s window has forgotten `up`.
        let idle: Vec<Sample> = (13..=24).map(|i| sample(5.0 * f64::from(i), 0, 0, 0, up)).collect();
        assert_eq!(decide(allot.as_mut(), &snapshot, 135.0, up, &idle), up);
        assert_eq!(decide(allot.as_mut(), &snapshot, 380.0, up, &idle), 0);
    }

    #[test]
    fn wva_sizes_each_variant_on_its_own_capacity() {
        let (scenario, snapshot) = (
            one_replica_scenario("llama2-70b/h100-80gb/tp4", 64, Role::Both, 1),
            one_replica("llama2-70b/h100-80gb/tp4", 64, Role::Both, 1),
        );
        let mut wva = build(PolicyKind::Wva, &scenario, &snapshot, &PolicySettings::default());
        let busy: Vec<Sample> = (1..=12).map(|i| sample(5.0 * f64::from(i), 60, 0, 10, 1)).collect();
        let demand = &snapshot.models[0].demands[0];
        let cap = fleet::capacity(&snapshot.variants[0], demand, snapshot.settings.max_utilization).rps;
        assert_eq!(decide(wva.as_mut(), &snapshot, 75.0, 1, &busy), (12.0 / cap).ceil() as u32);
        // Unlimited mode keeps one replica when idle.
        let idle: Vec<Sample> = (1..=12).map(|i| sample(5.0 * f64::from(i), 0, 0, 0, 1)).collect();
        assert_eq!(decide(wva.as_mut(), &snapshot, 75.0, 1, &idle), 1);
    }

    /// One run of the closed loop from one replica on a steady 8 req/s for 1,800 s (Poisson arrivals, request
    /// sizes drawn from the declared shape by a low-discrepancy sequence: deterministic): the
    /// simulated truth is the bundled H100 profile, the loop plans with it × `skew` (0.7: 30 %
    /// optimistic). Returns the desired replicas per cycle, the tail's p95 TTFT and mean ITL
    /// (requests arriving in the last 600 s), and the final fleet's cost per hour.
    fn closed_loop(skew: f64) -> (Vec<u32>, f64, f64, f64) {
        let text = "accelerators:
  - { name: H100-80GB, gpus: 64, cost_usd_per_gpu_hour: 4.25 }
service_classes:
  - { name: premium, priority: 1, targets: [{ model: chat, ttft: { ms: 2000, statistic: p95 }, itl: { ms: 60 } }] }
load:
  - { model: chat, class: premium, arrival_rate_rps: 8, input_tokens: 1155, output_tokens: 211 }
variants:
  - { name: chat-h100, model: chat, accelerator: H100-80GB, gpus_per_replica: 4, max_batch: 64, current_replicas: 1, profile: llama2-70b/h100-80gb/tp4 }
";
        let truth_scenario = crate::scenario::parse(text).expect("parses");
        let truth = crate::scenario::validate(&truth_scenario).expect("valid");
        let mut skewed = truth_scenario.clone();
        let mut profile = crate::scenario::bundled::profiles()
            .iter()
            .find(|p| p.name == "llama2-70b/h100-80gb/tp4")
            .expect("bundled profile")
            .clone();
        profile.params = profile.params.corrected(skew, skew);
        profile.name = "skewed/h100".into();
        skewed.profiles.push(profile);
        skewed.variants[0].profile = Some("skewed/h100".into());
        let workload = truth.models[0].demands[0].workload;
        let (duration_s, rps) = (1800.0, 8.0);
        let mut requests = Vec::new();
        let (mut t, mut i) = (0.0, 0u64);
        let frac = |x: f64| x - x.floor();
        while t < duration_s {
            let k = i as f64;
            let u = |a: f64| frac(0.5 + k * a).clamp(0.005, 0.995);
            requests.push(crate::sim::trace::Request {
                arrival_s: t,
                input_tokens: workload.input.quantile(u(0.618_033_988_75)).round().clamp(1.0, 8192.0) as u32,
                output_tokens: workload.output.quantile(u(0.414_213_562_37)).round().clamp(1.0, 2048.0) as u32,
                model: 0,
                demand: 0,
            });
            t += -(1.0 - u(0.732_050_807_57)).ln() / rps;
            i += 1;
        }
        let mut behavior = Behavior::default();
        behavior.scale_down.stabilization_window_seconds = 300;
        let config = crate::sim::SimConfig::default();
        let controls = Controls { interval_s: config.control_period_s, ..Controls::default() };
        let mut policy = Allot {
            scenario: skewed,
            memory: Memory::new(behavior).with_controls(controls),
            previous: None,
            cycle: 0,
            seen_until_s: f64::NEG_INFINITY,
        };
        struct Recording<'a>(&'a mut Allot, Vec<u32>);
        impl Policy for Recording<'_> {
            fn name(&self) -> &str {
                "allot"
            }
            fn decide(&mut self, obs: &Observation<'_>) -> Vec<u32> {
                let wanted = self.0.decide(obs);
                self.1.push(wanted[0]);
                wanted
            }
        }
        let mut recording = Recording(&mut policy, Vec::new());
        let outcome = crate::sim::engine::run(&truth, &requests, &mut recording, &config, &mut |_| {});
        let history = recording.1;
        let (mut ttft, mut itl) = (Vec::new(), Vec::new());
        for (r, o) in requests.iter().zip(&outcome.requests) {
            if r.arrival_s < duration_s - 600.0 {
                continue;
            }
            ttft.push(o.ttft_ms().unwrap_or(f64::INFINITY));
            if let (Some(first), Some(done)) = (o.first_token_s, o.done_s)
                && r.output_tokens > 1
            {
                itl.push(1000.0 * (done - first) / f64::from(r.output_tokens - 1));
            }
        }
        ttft.sort_by(f64::total_cmp);
        let p95_ttft_ms = ttft[((0.95 * ttft.len() as f64).ceil() as usize).clamp(1, ttft.len()) - 1];
        let mean_itl_ms = itl.iter().sum::<f64>() / itl.len().max(1) as f64;
        let cost = f64::from(*history.last().expect("cycles")) * 4.0 * 4.25;
        (history, p95_ttft_ms, mean_itl_ms, cost)
    }

    /// The cycle from which the loop keeps its final fleet.
    fn settled_at(history: &[u32]) -> usize {
        let last = history[history.len() - 1];
        history.iter().rposition(|&n| n != last).map_or(0, |i| i + 1)
    }

    #[test]
    fn a_30_percent_wrong_profile_is_calibrated_to_meet_the_slo_at_the_true_profiles_cost() {
        let (truth, truth_ttft, truth_itl, truth_cost) = closed_loop(1.0);
        eprintln!(
            "true profile: {truth:?}, tail p95 TTFT {truth_ttft:.0} ms, mean ITL {truth_itl:.1} ms, ${truth_cost}/h"
        );
        assert!(truth_ttft <= 2000.0 && truth_itl <= 60.0, "test premise: the true profile meets the SLO");
        for skew in [0.7, 1.3] {
            let (history, ttft, itl, cost) = closed_loop(skew);
            let settled = settled_at(&history);
            eprintln!(
                "profile × {skew}: {history:?}, settled at cycle {settled}, tail p95 TTFT {ttft:.0} ms, mean ITL {itl:.1} ms, ${cost}/h"
            );
            assert!(
                ttft <= 2000.0 && itl <= 60.0,
                "profile × {skew}: the SLO is met once calibrated: {ttft} ms, {itl} ms"
            );
            assert!(
                cost <= 1.05 * truth_cost,
                "profile × {skew}: ${cost}/h against ${truth_cost}/h with the true profile"
            );
            assert!(settled <= 40, "profile × {skew}: settled at cycle {settled} of {}", history.len());
        }
    }
}
