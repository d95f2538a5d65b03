//! One cycle's decision, pure: observation + previous decision + loop memory → decision.
//!
//! 1. Learn from the observation: start-up times, the calibration of each variant's profile
//!    ([`super::calibrate`]), each model's activity and whether it is in panic.
//! 2. Models with missing or stale load are pinned at what they run (or what was last decided,
//!    whichever is more): never scaled down on missing data, and their GPUs stay accounted.
//! 3. The planning snapshot: profiles corrected by calibration; each model's load raised to the
//!    upper quantile of its forecast at the time a replica started now would be ready
//!    ([`super::forecast`]), to what a declared schedule expects, and by the requests queued at
//!    the gateway; a model that scales to zero keeps a replica until its idle window passes.
//! 4. The core plans it ([`crate::optimize::plan`]). Each variant's planned replicas pass HPA's
//!    behavior ([`super::stabilize`]); panic bypasses it. When that keeps variants off their plan
//!    (a scale-down window holding GPUs, a rate limit), the core plans again with those pinned,
//!    and the new counts of the others go through the behavior again — until no variant is
//!    kept off its plan, so the applied plan never counts on GPUs that are not free and no count
//!    skips a window.

use std::collections::{BTreeMap, BTreeSet};

use super::calibrate::{CalibrationReport, CalibrationState};
use super::forecast::Forecast;
use super::memory::Memory;
use super::{Decision, Observed, PodCounts, VariantDecision};
use crate::plan::{Plan, PlanStatus};
use crate::scenario::Snapshot;

/// At most this many planning passes per cycle (each pins more variants; a fleet converges in
/// two or three).
const MAX_PASSES: usize = 6;

/// Decide what every variant should run this cycle; `previous` is the last decision, if any.
/// The observation's time drives the stabilization windows.
pub fn decide(observed: &Observed, previous: Option<&Decision>, memory: &mut Memory, cycle: u64) -> Decision {
    let now_s = observed.at_s;
    let snapshot = &observed.snapshot;
    let evidence = &observed.evidence;
    let controls = memory.controls.clone();
    let previous_desired: BTreeMap<&str, u32> =
        previous.map(|p| p.variants.iter().map(|v| (v.name.as_str(), v.desired)).collect()).unwrap_or_default();
    let current: Vec<u32> = snapshot.variants.iter().map(|v| v.current_replicas).collect();
    // What a held variant keeps: what runs, or what was last decided if more is on its way.
    let hold =
        |i: usize| current[i].max(previous_desired.get(snapshot.variants[i].name.as_str()).copied().unwrap_or(0));

    // 1. Learn.
    for v in &snapshot.variants {
        let declared = evidence.startup_spec_s.get(&v.name).copied();
        let seen = evidence.startups_s.get(&v.name).map_or(&[][..], Vec::as_slice);
        memory.learn_startup(&v.name, declared, seen);
    }
    memory.startup.retain(|name, _| snapshot.variants.binary_search_by(|v| v.name.as_str().cmp(name)).is_ok());
    let calibration = memory.calibration.update(snapshot, evidence, &controls.calibration);
    let activity = Activity::observe(memory, observed);
    let panic = panics(memory, observed);

    // 2. Holds for models without fresh load.
    let mut pins: BTreeMap<usize, (u32, String)> = BTreeMap::new();
    for (i, v) in snapshot.variants.iter().enumerate() {
        let model = &snapshot.models[v.model].name;
        if let Some(reason) = observed.stale_models.get(model) {
            pins.insert(i, (hold(i), format!("held: {reason}")));
        }
    }

    // 3. What to plan for.
    let mut planning = snapshot.clone();
    if controls.calibration.enabled {
        memory.calibration.apply(&mut planning);
    }
    let forecasts = plan_load(memory, observed, &mut planning, &activity);

    // 4. Plan, then damp and re-plan until nothing more is kept off its plan.
    let first = crate::optimize::plan(&pinned(&planning, &pins));
    let planned: Vec<u32> = snapshot.variants.iter().map(|v| replicas_in(&first, &v.name).unwrap_or(0)).collect();
    let mut plan = first;
    let mut recommended = planned.clone();
    let mut desired: Vec<(u32, Option<String>)> = Vec::with_capacity(snapshot.variants.len());
    if plan.status == PlanStatus::Fallback {
        // No plan: keep what runs (the fallback plan's replicas are the current ones).
        desired.extend((0..snapshot.variants.len()).map(|i| (hold(i), Some("held: no plan was found in time".into()))));
    } else {
        let damp = |i: usize, r: u32| -> (u32, Option<String>) {
            let v = &snapshot.variants[i];
            let model = &snapshot.models[v.model].name;
            if let Some(why) = panic.get(model) {
                return if r >= current[i] { (r, None) } else { (current[i], Some(format!("panic: {why}"))) };
            }
            if r == 0 && activity.to_zero.contains(&v.model) {
                return (0, None);
            }
            let s = memory.stabilizer.evaluate(&v.name, now_s, current[i], r);
            match s.limit {
                Some(limit) if s.replicas != r => (s.replicas, Some(format!("stabilized: {}", limit.as_str()))),
                _ => (r, None),
            }
        };
        let mut limited = pins.clone();
        let mut settled = false;
        for _ in 0..MAX_PASSES {
            let mut grew = false;
            for i in 0..snapshot.variants.len() {
                if limited.contains_key(&i) {
                    continue;
                }
                if let (n, Some(reason)) = damp(i, recommended[i])
                    && n != recommended[i]
                {
                    limited.insert(i, (n, reason));
                    grew = true;
                }
            }
            if !grew {
                settled = true;
                break;
            }
            let next = crate::optimize::plan(&pinned(&planning, &limited));
            if next.status == PlanStatus::Fallback {
                break;
            }
            plan = next;
            for (i, v) in snapshot.variants.iter().enumerate() {
                if !limited.contains_key(&i) {
                    recommended[i] = replicas_in(&plan, &v.name).unwrap_or(recommended[i]);
                }
            }
        }
        if !settled {
            // Out of passes (or a pass found no plan): every count still goes through the
            // behavior, and the plan reported is the one with all of them pinned when it exists.
            let mut extra = false;
            for i in 0..snapshot.variants.len() {
                if !limited.contains_key(&i)
                    && let (n, Some(reason)) = damp(i, recommended[i])
                    && n != recommended[i]
                {
                    limited.insert(i, (n, reason));
                    extra = true;
                }
            }
            if extra {
                let last = crate::optimize::plan(&pinned(&planning, &limited));
                if last.status != PlanStatus::Fallback {
                    plan = last;
                }
            }
        }
        for (i, v) in snapshot.variants.iter().enumerate() {
            match limited.get(&i) {
                Some((n, reason)) => desired.push((*n, Some(reason.clone()))),
                None => desired.push((replicas_in(&plan, &v.name).unwrap_or(recommended[i]), None)),
            }
        }
    }

    let mut variants = Vec::with_capacity(snapshot.variants.len());
    for (i, v) in snapshot.variants.iter().enumerate() {
        let (replicas, reason) = desired[i].clone();
        if !pins.contains_key(&i) {
            // HPA keeps the unstabilized recommendation: what the plan wanted in the pass that
            // decided this variant.
            memory.stabilizer.recommend(&v.name, now_s, current[i], recommended[i]);
        }
        memory.stabilizer.record(&v.name, now_s, current[i], replicas);
        let model = &snapshot.models[v.model].name;
        let reason = reason.or_else(|| {
            (replicas == 0 && current[i] > 0 && activity.to_zero.contains(&v.model))
                .then(|| format!("scaled to zero: no request for {:.0} s", activity.idle_s(model, now_s)))
        });
        variants.push(VariantDecision {
            name: v.name.clone(),
            model: model.clone(),
            accelerator: snapshot.accelerators[v.accelerator].name.clone(),
            role: v.role,
            pods: observed.pods.get(i).copied().unwrap_or(PodCounts { ready: current[i], ..PodCounts::default() }),
            current: current[i],
            planned: planned[i],
            desired: replicas,
            reason,
            // Reported once there is something to say: evidence, or a correction in use.
            calibration: calibration
                .get(&v.name)
                .filter(|r| {
                    r.state != CalibrationState::NotCalibrated
                        && !(r.state == CalibrationState::InsufficientTraffic && r.confidence == 0.0)
                })
                .cloned(),
        });
    }
    memory.stabilizer.retain(|name| snapshot.variants.binary_search_by(|v| v.name.as_str().cmp(name)).is_ok());
    let changed = previous.is_none_or(|p| {
        p.variants.len() != variants.len()
            || p.variants.iter().zip(&variants).any(|(a, b)| a.name != b.name || a.desired != b.desired)
    });
    Decision {
        cycle,
        snapshot_id: snapshot_id(snapshot),
        observed_at_s: now_s,
        plan,
        variants,
        held_models: observed.stale_models.clone(),
        forecasts,
        panic,
        changed,
    }
}

/// Each model's activity this cycle: which may go to zero now.
struct Activity {
    /// Models whose variants all allow 0 and that have been idle for the whole idle window.
    to_zero: BTreeSet<usize>,
    /// Models whose variants all allow 0 but that were active within the idle window.
    keep_one: BTreeSet<usize>,
    last_active_s: BTreeMap<String, f64>,
}

impl Activity {
    fn observe(memory: &mut Memory, observed: &Observed) -> Self {
        let now_s = observed.at_s;
        let snapshot = &observed.snapshot;
        let idle_s = memory.controls.scale_to_zero.idle_s;
        let (mut to_zero, mut keep_one) = (BTreeSet::new(), BTreeSet::new());
        for (m, model) in snapshot.models.iter().enumerate() {
            let served = snapshot.variants.iter().filter(|v| v.model == m).filter_map(|v| observed.evidence.served.get(&v.name));
            let busy = served.clone().any(|s| s.arrival_rps > 0.0 || s.waiting_per_replica > 0.0);
            let active = model.demands.iter().any(|d| d.arrival_rps > 0.0)
                || observed.evidence.backlog.get(&model.name).is_some_and(|&b| b > 0.0)
                || busy;
            // A model seen for the first time (or after a restart) with replicas counts as active
            // now: a restart never scales anything to zero before a full idle window (and never
            // wakes a model that is at zero and idle).
            let running = snapshot.variants.iter().any(|v| v.model == m && v.current_replicas > 0);
            let first_seen = if running || active { now_s } else { now_s - idle_s };
            let last = memory.last_active_s.entry(model.name.clone()).or_insert(first_seen);
            if active || observed.stale_models.contains_key(&model.name) {
                *last = now_s;
            }
            let zero_allowed =
                model.min_replicas == 0 && snapshot.variants.iter().filter(|v| v.model == m).all(|v| v.min_replicas == 0);
            if zero_allowed {
                if now_s - *last >= idle_s {
                    to_zero.insert(m);
                } else {
                    keep_one.insert(m);
                }
            }
        }
        memory.last_active_s.retain(|name, _| snapshot.models.iter().any(|m| &m.name == name));
        Self { to_zero, keep_one, last_active_s: memory.last_active_s.clone() }
    }

    fn idle_s(&self, model: &str, now_s: f64) -> f64 {
        self.last_active_s.get(model).map_or(0.0, |t| now_s - t)
    }
}

/// Models in panic, with why: an observed latency statistic at least `panic.factor` times its
/// target this cycle, or within `panic.hold_s` of such a cycle.
fn panics(memory: &mut Memory, observed: &Observed) -> BTreeMap<String, String> {
    let settings = memory.controls.panic.clone();
    let now_s = observed.at_s;
    let snapshot = &observed.snapshot;
    if !settings.enabled {
        memory.panic_until_s.clear();
        return BTreeMap::new();
    }
    for (m, model) in snapshot.models.iter().enumerate() {
        let mut worst: Option<(f64, String)> = None;
        for v in snapshot.variants.iter().filter(|v| v.model == m) {
            let Some(stats) = observed.evidence.served.get(&v.name).filter(|s| s.finished >= 10) else { continue };
            for demand in &model.demands {
                let class = &snapshot.classes[demand.class].name;
                for (metric, target, measured) in
                    [("TTFT", demand.slo.ttft, stats.ttft), ("ITL", demand.slo.itl, stats.itl)]
                {
                    let (Some(target), Some(measured)) = (target, measured) else { continue };
                    let value = measured.get(target.statistic).unwrap_or(measured.mean_ms);
                    let ratio = value / target.ms.max(1e-9);
                    if ratio >= settings.factor && worst.as_ref().is_none_or(|(r, _)| ratio > *r) {
                        worst = Some((
                            ratio,
                            format!(
                                "observed {} {} {:.0} ms on {} is {:.1}× the {class} target {:.0} ms",
                                target.statistic.as_str(),
                                metric,
                                value,
                                v.name,
                                ratio,
                                target.ms
                            ),
                        ));
                    }
                }
            }
        }
        if let Some((_, why)) = worst {
            memory.panic_until_s.insert(model.name.clone(), (now_s + settings.hold_s, why));
        }
    }
    memory.panic_until_s.retain(|name, (until, _)| *until >= now_s && snapshot.models.iter().any(|m| &m.name == name));
    memory.panic_until_s.iter().map(|(m, (_, why))| (m.clone(), why.clone())).collect()
}

/// Raise each model's planned load to what it must serve when a replica started now is ready:
/// the forecast's upper quantile at that horizon, a declared schedule's expected load, and the
/// gateway's queue; keep a replica of a model inside its idle window and a schedule's minimum.
/// Returns the forecasts, by model.
fn plan_load(
    memory: &mut Memory,
    observed: &Observed,
    planning: &mut Snapshot,
    activity: &Activity,
) -> BTreeMap<String, Forecast> {
    let now_s = observed.at_s;
    let controls = memory.controls.clone();
    let mut forecasts = BTreeMap::new();
    for m in 0..planning.models.len() {
        let name = planning.models[m].name.clone();
        if observed.stale_models.contains_key(&name) {
            continue;
        }
        let observed_rps: f64 = planning.models[m].demands.iter().map(|d| d.arrival_rps).sum();
        let startup_s = planning
            .variants
            .iter()
            .filter(|v| v.model == m)
            .map(|v| memory.startup_s(&v.name, observed.evidence.startup_spec_s.get(&v.name).copied()))
            .fold(0.0, f64::max);
        let horizon_s = startup_s + controls.interval_s + observed.metric_age_s.get(&name).copied().unwrap_or(0.0);
        let mut target_rps = observed_rps;
        if controls.forecast.enabled {
            memory.forecaster.observe(&name, now_s, observed_rps, &controls.forecast);
            if let Some(f) = memory.forecaster.forecast(&name, horizon_s, &controls.forecast) {
                target_rps = target_rps.max(f.planned_rps);
                forecasts.insert(name.clone(), f);
            }
        }
        let mut min_replicas = planning.models[m].min_replicas;
        for s in controls.schedules.iter().filter(|s| s.model == name) {
            if s.active_at(now_s) || s.active_at(now_s + horizon_s) {
                target_rps = target_rps.max(s.expected_rps.unwrap_or(0.0));
                min_replicas = min_replicas.max(s.min_replicas.unwrap_or(0));
            }
        }
        // Requests queued at the gateway are served when the replicas are ready.
        let backlog = observed.evidence.backlog.get(&name).copied().unwrap_or(0.0);
        target_rps += backlog / horizon_s.max(30.0);
        if activity.keep_one.contains(&m) {
            min_replicas = min_replicas.max(1);
        }
        let model = &mut planning.models[m];
        model.min_replicas = min_replicas;
        if target_rps > observed_rps && !model.demands.is_empty() {
            if observed_rps > 0.0 {
                let scale = target_rps / observed_rps;
                model.demands.iter_mut().for_each(|d| d.arrival_rps *= scale);
            } else {
                let share = target_rps / model.demands.len() as f64;
                model.demands.iter_mut().for_each(|d| d.arrival_rps = share);
            }
        }
        if let Some(f) = forecasts.get_mut(&name) {
            f.planned_rps = target_rps;
        }
    }
    memory.forecaster.retain(|name| planning.models.iter().any(|m| m.name == name));
    forecasts
}

/// The snapshot with some variants fixed at a replica count.
fn pinned(snapshot: &Snapshot, pins: &BTreeMap<usize, (u32, String)>) -> Snapshot {
    let mut s = snapshot.clone();
    for (&i, (n, _)) in pins {
        let v = &mut s.variants[i];
        v.min_replicas = *n;
        v.max_replicas = *n;
    }
    s
}

fn replicas_in(plan: &Plan, variant: &str) -> Option<u32> {
    plan.variants.binary_search_by(|p| p.name.as_str().cmp(variant)).ok().map(|i| plan.variants[i].replicas)
}

/// FNV-1a of a text: a stable digest for ids.
pub(crate) fn digest(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A stable digest of a snapshot (FNV-1a over its debug form): equal snapshots, equal ids.
pub fn snapshot_id(snapshot: &Snapshot) -> String {
    format!("{:016x}", digest(&format!("{snapshot:?}")))
}

/// The calibration reported for a variant, for the metrics and the status.
pub fn calibration_of<'a>(decision: &'a Decision, variant: &str) -> Option<&'a CalibrationReport> {
    decision.variants.iter().find(|v| v.name == variant).and_then(|v| v.calibration.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::stabilize::Behavior;

    use crate::controller::testing::observed;

    fn desired(d: &Decision) -> Vec<u32> {
        d.variants.iter().map(|v| v.desired).collect()
    }

    #[test]
    fn a_model_without_fresh_metrics_is_held_not_scaled_down() {
        let mut stabilizer = Memory::reactive(Behavior::default());
        // Load near zero would scale down, but the metrics are stale.
        let mut obs = observed(0.01, 3, 1, 0.0);
        obs.stale_models.insert("chat".into(), "metrics for model chat are 300 s old".into());
        let d = decide(&obs, None, &mut stabilizer, 1);
        assert_eq!(desired(&d), vec![1, 3]);
        assert!(d.variants.iter().all(|v| v.reason.as_deref().is_some_and(|r| r.starts_with("held: metrics"))));
        assert_eq!(d.held_models.len(), 1);
    }

    #[test]
    fn held_model_keeps_a_higher_previous_decision() {
        let mut stabilizer = Memory::reactive(Behavior::default());
        let first = decide(&observed(12.0, 0, 0, 0.0), None, &mut stabilizer, 1);
        let wanted = desired(&first);
        assert!(wanted.iter().sum::<u32>() > 0);
        // Replicas still starting (0 ready), then metrics vanish: hold what was decided.
        let mut obs = observed(12.0, 0, 0, 30.0);
        obs.stale_models.insert("chat".into(), "no metrics for model chat".into());
        let d = decide(&obs, Some(&first), &mut stabilizer, 2);
        assert_eq!(desired(&d), wanted);
    }

    #[test]
    fn scale_down_waits_for_the_window_and_the_rest_is_planned_around_it() {
        let mut stabilizer = Memory::reactive(Behavior::default());
        let busy = decide(&observed(12.0, 0, 0, 0.0), None, &mut stabilizer, 1);
        let (a100, h100) = (busy.variants[0].desired, busy.variants[1].desired);
        assert!(a100 + h100 >= 2, "{:?}", desired(&busy));
        // Load drops: the optimizer wants fewer, the default 300 s window holds them.
        let quiet = decide(&observed(0.5, h100, a100, 60.0), Some(&busy), &mut stabilizer, 2);
        assert!(quiet.variants.iter().any(|v| v.planned < v.current), "{quiet:#?}");
        assert_eq!(desired(&quiet), vec![a100, h100]);
        assert!(quiet.variants.iter().any(|v| v.reason.as_deref() == Some("stabilized: scale_down_window")));
        // The reported plan is the one applied: its replicas are the desired ones.
        let planned: Vec<u32> = quiet.plan.variants.iter().map(|v| v.replicas).collect();
        assert_eq!(planned, desired(&quiet));
        // After the window the plan goes through.
        let later = decide(&observed(0.5, h100, a100, 400.0), Some(&quiet), &mut stabilizer, 3);
        assert!(desired(&later).iter().sum::<u32>() < a100 + h100, "{:?}", desired(&later));
        assert!(later.variants.iter().all(|v| v.desired == v.planned));
    }

    #[test]
    fn equal_observations_give_equal_decisions() {
        let run = || {
            let mut stabilizer = Memory::reactive(Behavior::default());
            decide(&observed(7.0, 1, 1, 0.0), None, &mut stabilizer, 1)
        };
        let (a, b) = (run(), run());
        assert_eq!(a.snapshot_id, b.snapshot_id);
        assert_eq!(desired(&a), desired(&b));
        assert!(a.changed);
    }
}
