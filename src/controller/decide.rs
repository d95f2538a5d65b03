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

/// What one cycle planned on, kept with its decision for what-if plans: the observed snapshot
/// with calibrated profiles, planned load and the holds of models with stale metrics, before
/// stabilization pins anything; what raised each model's load; and the cost of that plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanBasis {
    pub snapshot: Snapshot,
    /// Per model (those whose load is planned; held models are not).
    pub load: BTreeMap<String, LoadRaise>,
    pub cost_usd_per_hour: f64,
}

/// What the loop raises a model's observed load to, besides the observation itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadRaise {
    /// The forecast's upper quantile at the horizon, req/s.
    pub forecast_rps: Option<f64>,
    /// The largest load an active schedule expects, req/s (0 without one).
    pub scheduled_rps: f64,
    /// Requests queued at the gateway, spread over the horizon, req/s.
    pub backlog_rps: f64,
}

impl LoadRaise {
    /// The load to plan for when `observed_rps` is observed; `factor` is a what-if's multiplier
    /// of the load, which scales the forecast learnt from it too.
    pub fn target_rps(&self, observed_rps: f64, factor: f64) -> f64 {
        let forecast = self.forecast_rps.map_or(0.0, |f| f * factor);
        observed_rps.max(forecast).max(self.scheduled_rps) + self.backlog_rps
    }
}

/// Raise a model's demands from `observed_rps` in all to `target_rps`: in proportion, or in equal
/// shares when nothing is observed. A target at or below the observation changes nothing.
pub fn set_load(model: &mut crate::scenario::snapshot::Model, observed_rps: f64, target_rps: f64) {
    if target_rps <= observed_rps || model.demands.is_empty() {
        return;
    }
    if observed_rps > 0.0 {
        let scale = target_rps / observed_rps;
        model.demands.iter_mut().for_each(|d| d.arrival_rps *= scale);
    } else {
        let share = target_rps / model.demands.len() as f64;
        model.demands.iter_mut().for_each(|d| d.arrival_rps = share);
    }
}

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
    let (forecasts, load) = plan_load(memory, observed, &mut planning, &activity);

    // 4. Plan, then damp and re-plan until nothing more is kept off its plan.
    let basis = pinned(&planning, &pins);
    let first = crate::optimize::plan(&basis);
    let basis = PlanBasis { snapshot: basis, load, cost_usd_per_hour: first.cost_usd_per_hour };
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
            for (i, &r) in recommended.iter().enumerate() {
                if limited.contains_key(&i) {
                    continue;
                }
                if let (n, Some(reason)) = damp(i, r)
                    && n != r
                {
                    limited.insert(i, (n, reason));
                    grew = true;
                }
            }
            if !grew {
                settled = true;
                break;
            }
            let next = held_re_plan(&planning, &limited);
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
            for (i, &r) in recommended.iter().enumerate() {
                if !limited.contains_key(&i)
                    && let (n, Some(reason)) = damp(i, r)
                    && n != r
                {
                    limited.insert(i, (n, reason));
                    extra = true;
                }
            }
            if extra {
                let last = held_re_plan(&planning, &limited);
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
        basis: Some(std::sync::Arc::new(basis)),
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
            let served =
                snapshot.variants.iter().filter(|v| v.model == m).filter_map(|v| observed.evidence.served.get(&v.name));
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
            let zero_allowed = model.min_replicas == 0
                && snapshot.variants.iter().filter(|v| v.model == m).all(|v| v.min_replicas == 0);
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
) -> (BTreeMap<String, Forecast>, BTreeMap<String, LoadRaise>) {
    let now_s = observed.at_s;
    let controls = memory.controls.clone();
    let mut forecasts = BTreeMap::new();
    let mut raises = BTreeMap::new();
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
        let mut raise = LoadRaise::default();
        if controls.forecast.enabled {
            memory.forecaster.observe(&name, now_s, observed_rps, &controls.forecast);
            if let Some(f) = memory.forecaster.forecast(&name, horizon_s, &controls.forecast) {
                raise.forecast_rps = Some(f.planned_rps);
                forecasts.insert(name.clone(), f);
            }
        }
        let mut min_replicas = planning.models[m].min_replicas;
        for s in controls.schedules.iter().filter(|s| s.model == name) {
            if s.active_at(now_s) || s.active_at(now_s + horizon_s) {
                raise.scheduled_rps = raise.scheduled_rps.max(s.expected_rps.unwrap_or(0.0));
                min_replicas = min_replicas.max(s.min_replicas.unwrap_or(0));
            }
        }
        // Requests queued at the gateway are served when the replicas are ready.
        let backlog = observed.evidence.backlog.get(&name).copied().unwrap_or(0.0);
        raise.backlog_rps = backlog / horizon_s.max(30.0);
        if activity.keep_one.contains(&m) {
            min_replicas = min_replicas.max(1);
        }
        let target_rps = raise.target_rps(observed_rps, 1.0);
        let model = &mut planning.models[m];
        model.min_replicas = min_replicas;
        set_load(model, observed_rps, target_rps);
        if let Some(f) = forecasts.get_mut(&name) {
            f.planned_rps = target_rps;
        }
        raises.insert(name, raise);
    }
    memory.forecaster.retain(|name| planning.models.iter().any(|m| m.name == name));
    (forecasts, raises)
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

/// A re-plan around replicas the behavior holds for now. It keeps the solver's split where a
/// least-loaded router would overload a variant (optimize/router.rs warns instead): the held
/// replicas carry their router share on top of the plan for the few minutes of a window, and
/// re-choosing the whole model around them would buy replicas that go again when the window
/// ends (a swing).
fn held_re_plan(snapshot: &Snapshot, pins: &BTreeMap<usize, (u32, String)>) -> Plan {
    let options = crate::optimize::PlanOptions { keep_planned_split: true, ..Default::default() };
    crate::optimize::plan_with(&pinned(snapshot, pins), None, &options)
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

    /// The two-variant fleet of [`observed`] with its GPU pools sized as given.
    fn fleet(rps: f64, h100_gpus: u32, h100: u32, a100: u32, at_s: f64) -> Observed {
        let mut o = observed(rps, h100, a100, at_s);
        let mut scenario = o.scenario.clone();
        for a in &mut scenario.accelerators {
            a.gpus = if a.name.starts_with("H100") { h100_gpus } else { 200 };
        }
        o = Observed::from_scenario(scenario, at_s).expect("valid");
        o
    }

    fn named<'a>(d: &'a Decision, name: &str) -> &'a VariantDecision {
        d.variants.iter().find(|v| v.name == name).expect("variant")
    }

    /// The replicas applied next cycle: what was decided.
    fn next(d: &Decision, rps: f64, h100_gpus: u32, at_s: f64) -> Observed {
        fleet(rps, h100_gpus, named(d, "ns/chat-h100").desired, named(d, "ns/chat-a100").desired, at_s)
    }

    #[test]
    fn a_re_plan_around_a_held_variant_goes_back_through_the_window() {
        // H100 is the cheaper capacity; the A100 replicas are more than the load needs, so the
        // plan drops them and the window holds them. Planned around the held A100s, the H100
        // variant would need fewer than it runs — but that count is a scale-down inside the
        // window too (the measured bug: H100 2 → 1 at once although 3 was recommended).
        let mut memory = Memory::reactive(Behavior::default());
        let d1 = decide(&fleet(6.0, 200, 3, 6, 0.0), None, &mut memory, 1);
        let (a1, h1) = (named(&d1, "ns/chat-a100"), named(&d1, "ns/chat-h100"));
        assert_eq!((a1.planned, a1.desired), (0, 6), "test premise: the A100s are held\n{d1:#?}");
        assert!(h1.planned >= 3, "test premise: the first pass keeps the H100s\n{d1:#?}");
        assert_eq!(h1.desired, 3, "{d1:#?}");
        assert_eq!(h1.reason.as_deref(), Some("stabilized: scale_down_window"), "{d1:#?}");
        // A pod is lost: 2 run, 3 was recommended inside the window, the re-plan wants fewer.
        let d2 = decide(&fleet(6.0, 200, 2, 6, 60.0), Some(&d1), &mut memory, 2);
        assert_eq!(named(&d2, "ns/chat-h100").desired, 2, "{d2:#?}");
        assert_eq!(named(&d2, "ns/chat-a100").desired, 6, "{d2:#?}");
        // The reported plan is the applied one.
        let applied: Vec<u32> = d2.plan.variants.iter().map(|v| v.replicas).collect();
        assert_eq!(applied, desired(&d2));
        // Past the window the fleet shrinks to the plan.
        let d3 = decide(&next(&d2, 6.0, 200, 400.0), Some(&d2), &mut memory, 3);
        assert!(desired(&d3).iter().sum::<u32>() < 8, "{:?}", desired(&d3));
    }

    #[test]
    fn no_variant_scales_below_what_it_ran_inside_the_window_whatever_the_re_plan_wants() {
        // Every mix of an over- and an under-provisioned variant at several loads: within the
        // first window nothing goes below what it ran at t = 0 (HPA counts that as recommended).
        let mut re_planned = 0;
        for (rps, h100, a100) in [(4.0, 2, 4), (6.0, 2, 6), (8.0, 1, 8), (10.0, 3, 6), (3.0, 4, 2), (12.0, 2, 10)] {
            let mut memory = Memory::reactive(Behavior::default());
            let d = decide(&fleet(rps, 200, h100, a100, 0.0), None, &mut memory, 1);
            for v in &d.variants {
                assert!(v.desired >= v.current, "rps {rps}: {} {} → {}\n{d:#?}", v.name, v.current, v.desired);
            }
            if d.variants.iter().any(|v| v.reason.is_none() && v.desired != v.planned)
                || d.variants.iter().any(|v| v.reason.is_some())
            {
                re_planned += 1;
            }
        }
        assert!(re_planned >= 3, "test premise: the re-plan path runs");
    }

    #[test]
    fn a_variant_at_the_inventory_edge_does_not_swing_12_6_12() {
        // 48 H100 GPUs: at most 12 replicas, all in use at the peak; A100s take the rest. When
        // the load falls, the A100s are held by the window; planned around them the H100s would
        // drop to about half and come back when the A100s' window ends (the measured swing,
        // 12 → 6 → 12 within 4 minutes).
        let mut memory = Memory::reactive(Behavior::default());
        let mut d = decide(&fleet(40.0, 48, 12, 0, 0.0), None, &mut memory, 1);
        assert_eq!(named(&d, "ns/chat-h100").desired, 12, "test premise: H100 is full\n{d:#?}");
        assert!(named(&d, "ns/chat-a100").desired > 0, "test premise: A100 takes the rest\n{d:#?}");
        let mut h100 = vec![12];
        let mut a100 = vec![named(&d, "ns/chat-a100").desired];
        for k in 1..=10u32 {
            let at_s = 60.0 * f64::from(k);
            let o = next(&d, 28.0, 48, at_s);
            d = decide(&o, Some(&d), &mut memory, u64::from(k) + 1);
            h100.push(named(&d, "ns/chat-h100").desired);
            a100.push(named(&d, "ns/chat-a100").desired);
        }
        assert!(h100.iter().all(|&n| n == 12), "H100 {h100:?}, A100 {a100:?}");
        // The A100s go once the window has passed, and only down.
        assert!(a100.windows(2).all(|w| w[1] <= w[0]), "A100 {a100:?}");
        assert!(a100.last() < a100.first(), "A100 {a100:?}");
    }

    #[test]
    fn a_full_type_does_not_relapse_into_asking_for_it_again() {
        // The three-cycle relapse without pending-pod memory: ask for a third H100 → it does not
        // fit (the type is full: 8 GPUs) → A100s take the demand → the pending pod is gone and
        // the type looks free again. Planned around the A100s (held by the window), the third
        // H100 is not worth asking for again.
        let mut memory = Memory::reactive(Behavior::default());
        let d1 = decide(&fleet(6.0, 12, 2, 0, 0.0), None, &mut memory, 1);
        assert_eq!(named(&d1, "ns/chat-h100").desired, 3, "test premise: a third H100 fits\n{d1:#?}");
        let d2 = decide(&fleet(6.0, 8, 2, 0, 30.0), Some(&d1), &mut memory, 2);
        assert_eq!(named(&d2, "ns/chat-h100").desired, 2, "{d2:#?}");
        let a100 = named(&d2, "ns/chat-a100").desired;
        assert!(a100 > 0, "test premise: the A100s take the demand\n{d2:#?}");
        let mut d = d2;
        for k in 3..=6 {
            let o = next(&d, 6.0, 12, 30.0 * (k - 1) as f64);
            d = decide(&o, Some(&d), &mut memory, k);
            assert_eq!((named(&d, "ns/chat-h100").desired, named(&d, "ns/chat-a100").desired), (2, a100), "{d:#?}");
        }
    }

    #[test]
    fn a_cost_tie_does_not_move_replicas_back_and_forth() {
        // Two H100 variants of one profile cost the same: small load changes must not swap
        // replicas between them (a move is worth its transition cost only when it saves more).
        let text = "accelerators:
  - { name: H100-80GB, gpus: 64, cost_usd_per_gpu_hour: 4.25 }
service_classes:
  - { name: premium, priority: 1, targets: [{ model: chat, ttft: { ms: 2000, statistic: p95 }, itl: { ms: 60 } }] }
load:
  - { model: chat, class: premium, arrival_rate_rps: 6, input_tokens: 1155, output_tokens: 211 }
variants:
  - { name: ns/chat-x, model: chat, accelerator: H100-80GB, gpus_per_replica: 4, max_batch: 64, current_replicas: 2, profile: llama2-70b/h100-80gb/tp4 }
  - { name: ns/chat-y, model: chat, accelerator: H100-80GB, gpus_per_replica: 4, max_batch: 64, current_replicas: 1, profile: llama2-70b/h100-80gb/tp4 }
";
        let base = crate::scenario::parse(text).expect("parses");
        let mut memory = Memory::reactive(Behavior::default());
        let mut previous: Option<Decision> = None;
        let mut history = Vec::new();
        for (k, rps) in [6.0, 6.2, 5.9, 6.1, 6.0, 5.8].into_iter().enumerate() {
            let mut s = base.clone();
            s.load[0].arrival_rate_rps = rps;
            if let Some(p) = &previous {
                for v in &mut s.variants {
                    v.current_replicas = named(p, &v.name).desired;
                }
            }
            let o = Observed::from_scenario(s, 30.0 * k as f64).expect("valid");
            let d = decide(&o, previous.as_ref(), &mut memory, k as u64 + 1);
            history.push(desired(&d));
            previous = Some(d);
        }
        assert!(history.iter().all(|h| *h == history[0]), "{history:?}");
        assert_eq!(history[0], vec![2, 1], "the fleet that serves the load is kept: {history:?}");
    }

    #[test]
    fn panic_mode_scales_up_past_the_rate_limits_at_once() {
        use crate::controller::evidence::{LatencySummary, ServedStats};
        use crate::controller::stabilize::ScalingRules;
        let behavior = Behavior { scale_up: ScalingRules::hpa_up(), ..Behavior::default() };
        let calm = decide(&fleet(40.0, 200, 1, 0, 0.0), None, &mut Memory::reactive(behavior.clone()), 1);
        let h100 = named(&calm, "ns/chat-h100");
        assert!(h100.planned > 5, "test premise: the plan wants more than the rate allows\n{calm:#?}");
        assert_eq!((h100.desired, h100.reason.as_deref()), (5, Some("stabilized: scale_up_rate")), "{calm:#?}");
        // The one replica serves its requests at 3× the p95 TTFT target: panic.
        let mut o = fleet(40.0, 200, 1, 0, 0.0);
        let ttft = LatencySummary { mean_ms: 4000.0, p95_ms: Some(6000.0), ..LatencySummary::default() };
        let stats = ServedStats {
            window_s: 60.0,
            ready_replicas: 1.0,
            finished: 100,
            ttft: Some(ttft),
            ..ServedStats::default()
        };
        o.evidence.served.insert("ns/chat-h100".into(), stats);
        let mut memory = Memory::reactive(behavior);
        memory.controls.panic.enabled = true;
        let d = decide(&o, None, &mut memory, 1);
        assert!(d.panic.contains_key("chat"), "{d:#?}");
        let h100 = named(&d, "ns/chat-h100");
        assert_eq!(h100.desired, h100.planned, "{d:#?}");
        // Panic holds for its hold time, then the limits apply again.
        let later = decide(&next(&d, 40.0, 200, 30.0), Some(&d), &mut memory, 2);
        assert!(later.panic.contains_key("chat"), "{later:#?}");
        let after = decide(&next(&later, 40.0, 200, 120.0), Some(&later), &mut memory, 3);
        assert!(after.panic.is_empty(), "{after:#?}");
    }

    #[test]
    fn a_rising_load_is_planned_for_when_new_replicas_are_ready() {
        // 30 s cycles on a ramp from 4 to 14 req/s: the forecast looks start-up + interval ahead
        // (120 s prior + 30 s) and the plan sizes for its upper bound, above what is observed now.
        let mut forecasting = Memory::new(Behavior::default());
        let mut reactive = Memory::reactive(Behavior::default());
        let (mut d, mut r) = (None::<Decision>, None::<Decision>);
        for k in 0..6u32 {
            let rps = 4.0 + 2.0 * f64::from(k);
            let at_s = 30.0 * f64::from(k);
            let o = d.as_ref().map_or_else(|| fleet(rps, 200, 2, 0, at_s), |p| next(p, rps, 200, at_s));
            let o2 = r.as_ref().map_or_else(|| fleet(rps, 200, 2, 0, at_s), |p| next(p, rps, 200, at_s));
            d = Some(decide(&o, d.as_ref(), &mut forecasting, u64::from(k) + 1));
            r = Some(decide(&o2, r.as_ref(), &mut reactive, u64::from(k) + 1));
        }
        let (d, r) = (d.expect("decided"), r.expect("decided"));
        let f = &d.forecasts["chat"];
        assert!((f.horizon_s - 150.0).abs() < 1e-9, "{f:?}");
        assert!(f.expected_rps > 14.0 && f.upper_rps >= f.expected_rps && f.lower_rps <= f.expected_rps, "{f:?}");
        assert!(f.planned_rps >= f.upper_rps, "{f:?}");
        assert!(r.forecasts.is_empty());
        let total = |d: &Decision| desired(d).iter().sum::<u32>();
        assert!(total(&d) > total(&r), "forecast {:?} vs reactive {:?}", desired(&d), desired(&r));
    }

    #[test]
    fn start_up_times_seen_shorten_the_forecast_horizon() {
        let mut memory = Memory::new(Behavior::default());
        let mut o = fleet(6.0, 200, 2, 0, 0.0);
        o.evidence.startup_spec_s.insert("ns/chat-h100".into(), 300.0);
        o.evidence.startup_spec_s.insert("ns/chat-a100".into(), 300.0);
        let first = decide(&o, None, &mut memory, 1);
        assert!((first.forecasts["chat"].horizon_s - 330.0).abs() < 1e-9, "{:?}", first.forecasts);
        for k in 1..=30u32 {
            let mut o = next(&first, 6.0, 200, 30.0 * f64::from(k));
            o.evidence.startup_spec_s =
                [("ns/chat-a100".to_string(), 300.0), ("ns/chat-h100".to_string(), 300.0)].into();
            o.evidence.startups_s =
                [("ns/chat-a100".to_string(), vec![60.0]), ("ns/chat-h100".to_string(), vec![60.0])].into();
            let d = decide(&o, None, &mut memory, u64::from(k) + 1);
            if k == 30 {
                let h = d.forecasts["chat"].horizon_s;
                assert!(h < 100.0, "learned start-up ~60 s + 30 s interval, got {h}");
            }
        }
    }
}
