//! Live what-if: edit the latest observed scenario (load, inventory, SLOs, priorities), plan it
//! the way the loop planned that cycle, and compare with what the controller currently wants.
//! Pure; the REST API calls it.
//!
//! The loop does not plan the raw observation: profiles carry its calibration, each model's load
//! is raised to its forecast, schedules and gateway backlog, and models with stale metrics are
//! held ([`super::decide`]). A what-if on the raw observation would compare a plan without any of
//! that with one that has it (double the load could look cheaper than now), so the overrides are
//! applied to the observation and the loop's adjustments carried over from [`PlanBasis`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Decision;
use super::decide::{PlanBasis, set_load};
use crate::plan::Plan;
use crate::scenario::{Problem, Scenario, Snapshot};

/// Changes to the observed cluster. Every field is optional; names must exist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Multiply each model's observed arrival rate (all classes, 0 to 1000); `"*"` applies to
    /// every model not named.
    #[serde(default)]
    #[schema(schema_with = multipliers_schema)]
    pub load_multiplier: BTreeMap<String, f64>,
    /// Add (or with a negative number remove) GPUs of an accelerator type (±1,000,000).
    #[serde(default)]
    #[schema(schema_with = gpu_changes_schema)]
    pub inventory_change: BTreeMap<String, i64>,
    /// Change a service class's priority or targets.
    #[serde(default)]
    pub classes: BTreeMap<String, ClassOverride>,
}

/// New priority or targets of one class (for every model it covers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 10_000_000)]
    pub ttft_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 10_000_000)]
    pub itl_ms: Option<f64>,
}

fn multipliers_schema() -> utoipa::openapi::Object {
    crate::scenario::format::bounded_map(utoipa::openapi::schema::Type::Number, 0.0, MAX_LOAD_MULTIPLIER)
}

fn gpu_changes_schema() -> utoipa::openapi::Object {
    let max = f64::from(MAX_GPU_CHANGE);
    crate::scenario::format::bounded_map(utoipa::openapi::schema::Type::Integer, -max, max)
}

/// Bounds of the overrides (and of the scenario fields they change).
const MAX_LOAD_MULTIPLIER: f64 = 1000.0;
const MAX_GPU_CHANGE: u32 = 1_000_000;
const MAX_TARGET_MS: f64 = 1e7;

/// A what-if request body: `{"overrides": {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatIf {
    pub overrides: Overrides,
}

/// The what-if plan and how it differs from the controller's current decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WhatIfResult {
    /// The snapshot the overrides were applied to.
    pub base_snapshot_id: String,
    pub plan: Plan,
    /// Variants whose replicas differ from the current decision, sorted by name.
    pub diff: Vec<VariantDiff>,
    /// What-if cost minus the cost of the controller's own plan for the same snapshot (before
    /// scale-down stabilization holds anything), USD per hour: the overrides' effect alone.
    pub cost_change_usd_per_hour: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VariantDiff {
    pub variant: String,
    /// Desired replicas in the current decision (0 for a variant it does not have).
    pub current_desired: u32,
    pub what_if: u32,
}

/// Apply overrides to a scenario; every unknown name or bad number is reported with its path.
pub fn apply_overrides(scenario: &Scenario, overrides: &Overrides) -> Result<Scenario, Vec<Problem>> {
    let mut out = scenario.clone();
    let mut problems = Vec::new();
    let bad = |path: String, message: String| Problem { path, message };
    for (model, &factor) in &overrides.load_multiplier {
        let path = format!("overrides.load_multiplier.{model}");
        if !factor.is_finite() || !(0.0..=MAX_LOAD_MULTIPLIER).contains(&factor) {
            problems.push(bad(path, format!("must be a number in [0, {MAX_LOAD_MULTIPLIER}], got {factor}")));
        } else if model != "*" && !out.load.iter().any(|l| &l.model == model) {
            problems.push(bad(path, format!("no load is observed for model {model:?}")));
        }
    }
    if problems.is_empty() {
        for load in &mut out.load {
            let factor = overrides.load_multiplier.get(&load.model).or(overrides.load_multiplier.get("*"));
            if let Some(f) = factor {
                load.arrival_rate_rps *= f;
            }
        }
    }
    for (accelerator, &change) in &overrides.inventory_change {
        let path = format!("overrides.inventory_change.{accelerator}");
        match out.accelerators.iter_mut().find(|a| &a.name == accelerator) {
            None => problems.push(bad(path, format!("unknown accelerator {accelerator:?}"))),
            Some(a) => {
                match i64::from(a.gpus).checked_add(change).filter(|g| (0..=i64::from(MAX_GPU_CHANGE)).contains(g)) {
                    Some(g) => a.gpus = g as u32,
                    None => problems.push(bad(path, format!("{} GPUs {change:+} is out of range", a.gpus))),
                }
            }
        }
    }
    for (class, change) in &overrides.classes {
        let path = format!("overrides.classes.{class}");
        let Some(c) = out.service_classes.iter_mut().find(|c| &c.name == class) else {
            problems.push(bad(path, format!("unknown service class {class:?}")));
            continue;
        };
        if let Some(p) = change.priority {
            if (1..=100).contains(&p) {
                c.priority = p;
            } else {
                problems.push(bad(format!("{path}.priority"), format!("must be between 1 and 100, got {p}")));
            }
        }
        for (name, value) in [("ttft_ms", change.ttft_ms), ("itl_ms", change.itl_ms)] {
            let Some(ms) = value else { continue };
            if !ms.is_finite() || ms <= 0.0 || ms > MAX_TARGET_MS {
                problems.push(bad(
                    format!("{path}.{name}"),
                    format!("must be a number > 0 and ≤ {MAX_TARGET_MS}, got {ms}"),
                ));
                continue;
            }
            for t in &mut c.targets {
                let target = if name == "ttft_ms" { &mut t.ttft } else { &mut t.itl };
                match target {
                    Some(t) => t.ms = ms,
                    None => {
                        *target =
                            Some(crate::scenario::format::TargetSpec { ms, statistic: Default::default(), over: None })
                    }
                }
            }
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// Problems of the overridden scenario, named by the override that caused them
/// (`overrides.inventory_change.H100`, not `accelerators[2].gpus`): what the user sent. A
/// problem no override touches is the observed snapshot's own, and says so.
pub fn name_overrides(problems: Vec<Problem>, scenario: &Scenario, overrides: &Overrides) -> Vec<Problem> {
    let index = |path: &str, list: &str| -> Option<usize> {
        let rest = path.strip_prefix(list)?.strip_prefix('[')?;
        rest[..rest.find(']')?].parse().ok()
    };
    problems
        .into_iter()
        .map(|p| {
            let cause = if let Some(i) = index(&p.path, "accelerators") {
                scenario
                    .accelerators
                    .get(i)
                    .map(|a| &a.name)
                    .filter(|n| overrides.inventory_change.contains_key(*n))
                    .map(|n| format!("overrides.inventory_change.{n}"))
            } else if let Some(i) = index(&p.path, "service_classes") {
                scenario
                    .service_classes
                    .get(i)
                    .map(|c| &c.name)
                    .filter(|n| overrides.classes.contains_key(*n))
                    .map(|n| format!("overrides.classes.{n}"))
            } else if let Some(i) = index(&p.path, "load") {
                scenario.load.get(i).and_then(|l| {
                    if overrides.load_multiplier.contains_key(&l.model) {
                        Some(format!("overrides.load_multiplier.{}", l.model))
                    } else {
                        overrides.load_multiplier.contains_key("*").then(|| "overrides.load_multiplier.*".to_string())
                    }
                })
            } else {
                None
            };
            match cause {
                Some(path) => Problem { message: format!("{} (at {} after the overrides)", p.message, p.path), path },
                None => Problem { path: format!("observed snapshot: {}", p.path), message: p.message },
            }
        })
        .collect()
}

/// Why a what-if cannot be planned; each problem names the override that caused it.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejected {
    /// An override names nothing observed or is out of range.
    Overrides(Vec<Problem>),
    /// The overridden snapshot does not validate (a pinned replica no longer fits, …).
    Snapshot(Vec<Problem>),
}

/// The snapshot to plan for `overrides` on the `observed` scenario that `decision` was made on.
pub fn snapshot_for(observed: &Scenario, decision: &Decision, overrides: &Overrides) -> Result<Snapshot, Rejected> {
    let scenario = apply_overrides(observed, overrides).map_err(Rejected::Overrides)?;
    let snapshot = crate::scenario::validate(&scenario)
        .map_err(|e| Rejected::Snapshot(name_overrides(e.problems, &scenario, overrides)))?;
    Ok(match &decision.basis {
        Some(basis) => on_basis(snapshot, basis, overrides),
        None => snapshot,
    })
}

/// The snapshot a what-if plans: `overridden` (the observation with the overrides, validated)
/// with the loop's adjustments from `basis`. The overrides decide inventory, classes, targets
/// and the observed load; the basis decides profiles (calibration), minimum replicas and holds,
/// and what each model's load is raised to: its forecast scales with the load multiplier (it was
/// learnt from load the multiplier scales), a schedule's expected load and the gateway backlog do
/// not. Both come from one observation, so models and variants match by name; one that does not
/// keeps the overridden value.
pub fn on_basis(mut overridden: Snapshot, basis: &PlanBasis, overrides: &Overrides) -> Snapshot {
    for model in &mut overridden.models {
        let Some(planned) = basis.snapshot.models.iter().find(|m| m.name == model.name) else { continue };
        model.min_replicas = model.min_replicas.max(planned.min_replicas);
        let Some(raise) = basis.load.get(&model.name) else { continue };
        let factor = overrides.load_multiplier.get(&model.name).or(overrides.load_multiplier.get("*")).copied();
        let factor = factor.unwrap_or(1.0);
        // The overridden demands already carry the multiplier.
        let observed_rps: f64 = model.demands.iter().map(|d| d.arrival_rps).sum();
        let target_rps = raise.target_rps(observed_rps, factor);
        set_load(model, observed_rps, target_rps);
    }
    for variant in &mut overridden.variants {
        let Some(planned) = basis.snapshot.variants.iter().find(|v| v.name == variant.name) else { continue };
        variant.profile.clone_from(&planned.profile);
        variant.min_replicas = planned.min_replicas;
        variant.max_replicas = planned.max_replicas;
    }
    overridden
}

/// Compare a what-if plan with the current decision.
pub fn compare(plan: Plan, current: &Decision) -> WhatIfResult {
    let desired: BTreeMap<&str, u32> = current.variants.iter().map(|v| (v.name.as_str(), v.desired)).collect();
    let diff = plan
        .variants
        .iter()
        .filter_map(|p| {
            let now = desired.get(p.name.as_str()).copied().unwrap_or(0);
            (now != p.replicas).then(|| VariantDiff {
                variant: p.name.clone(),
                current_desired: now,
                what_if: p.replicas,
            })
        })
        .collect();
    WhatIfResult {
        base_snapshot_id: current.snapshot_id.clone(),
        cost_change_usd_per_hour: plan.cost_usd_per_hour
            - current.basis.as_ref().map_or(current.plan.cost_usd_per_hour, |b| b.cost_usd_per_hour),
        diff,
        plan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::LoadRaise;
    use crate::controller::schedule::{Schedule, ScheduleSpec};
    use crate::controller::testing::observed;
    use crate::controller::{Memory, Observed, decide};

    /// 2026-03-02 at 12:00 UTC.
    const NOON_S: f64 = (20_514.0 * 1440.0 + 720.0) * 60.0;

    /// A loop that expects `rps` of `chat` during business hours: it plans above what it observes.
    fn expecting(rps: f64) -> Memory {
        let mut memory = Memory::default();
        let spec = ScheduleSpec {
            model: "chat".into(),
            start: "0 8 * * *".into(),
            end: "0 18 * * *".into(),
            timezone: None,
            min_replicas: None,
            expected_rps: Some(rps),
        };
        memory.controls.schedules.push(Schedule::try_from(spec).expect("valid"));
        memory
    }

    fn what_if(o: &Observed, d: &Decision, overrides: &Overrides) -> WhatIfResult {
        let snapshot = snapshot_for(&o.scenario, d, overrides).expect("valid overrides");
        compare(crate::optimize::plan(&snapshot), d)
    }

    fn doubled() -> Overrides {
        Overrides { load_multiplier: [("*".to_string(), 2.0)].into(), ..Overrides::default() }
    }

    fn total_replicas(plan: &Plan) -> u32 {
        plan.variants.iter().map(|v| v.replicas).sum()
    }

    #[test]
    fn a_what_if_without_overrides_is_the_loops_own_plan() {
        let o = observed(4.0, 1, 1, NOON_S);
        let d = decide(&o, None, &mut expecting(10.0), 1);
        let w = what_if(&o, &d, &Overrides::default());
        assert_eq!(w.cost_change_usd_per_hour, 0.0, "{w:#?}");
        for v in &d.variants {
            let planned = w.plan.variants.iter().find(|p| p.name == v.name).expect("planned");
            assert_eq!(planned.replicas, v.planned, "{}", v.name);
        }
        // The loop planned for the schedule's 10 req/s, more than the raw observation needs.
        let raw = crate::optimize::plan(&o.snapshot);
        assert!(total_replicas(&w.plan) > total_replicas(&raw), "{w:#?}\n{raw:#?}");
    }

    #[test]
    fn more_load_costs_more_even_when_the_loop_plans_above_what_it_observes() {
        // A loop that forecasts (here: expects) more than it observes plans a dearer fleet than
        // the raw observation needs; doubling the raw observation must not look cheaper.
        let o = observed(4.0, 1, 1, NOON_S);
        let d = decide(&o, None, &mut expecting(10.0), 1);
        let w = what_if(&o, &d, &doubled());
        let basis = d.basis.as_ref().expect("basis");
        // 2 × 4 req/s stays under the schedule's 10: the plan is the loop's own.
        assert_eq!(w.cost_change_usd_per_hour, 0.0, "{w:#?}");
        assert!(w.plan.cost_usd_per_hour >= basis.cost_usd_per_hour);
        // Ten times the load is past the schedule: more replicas, more cost.
        let tenfold = Overrides { load_multiplier: [("chat".to_string(), 10.0)].into(), ..Overrides::default() };
        let w = what_if(&o, &d, &tenfold);
        assert!(w.cost_change_usd_per_hour > 0.0, "{w:#?}");
        assert!(!w.diff.is_empty());
    }

    #[test]
    fn the_forecast_scales_with_the_load_multiplier_and_schedules_and_backlog_do_not() {
        let raise = LoadRaise { forecast_rps: Some(12.0), scheduled_rps: 5.0, backlog_rps: 1.0 };
        // Observed 10, forecast 12: the forecast, plus the backlog.
        assert_eq!(raise.target_rps(10.0, 1.0), 13.0);
        // Twice the load (the observation already doubled): twice the forecast.
        assert_eq!(raise.target_rps(20.0, 2.0), 25.0);
        // A tenth: the schedule's floor holds.
        assert_eq!(raise.target_rps(1.0, 0.1), 6.0);
    }

    #[test]
    fn a_what_if_keeps_the_loops_calibrated_profiles_and_holds() {
        let o = observed(4.0, 1, 1, NOON_S);
        let mut d = decide(&o, None, &mut Memory::default(), 1);
        let mut basis = d.basis.as_deref().cloned().expect("basis");
        let held = &mut basis.snapshot.variants[0];
        held.min_replicas = 3;
        held.max_replicas = 3;
        if let Some(p) = held.profile.as_mut() {
            p.params.alpha_ms *= 1.5;
        }
        let expected = basis.snapshot.variants[0].clone();
        d.basis = Some(std::sync::Arc::new(basis));
        let snapshot = snapshot_for(&o.scenario, &d, &doubled()).expect("valid");
        let v = &snapshot.variants[0];
        assert_eq!((v.min_replicas, v.max_replicas), (3, 3));
        assert_eq!(v.profile, expected.profile);
        let plan = crate::optimize::plan(&snapshot);
        assert_eq!(plan.variants.iter().find(|p| p.name == v.name).map(|p| p.replicas), Some(3));
    }

    #[test]
    fn overrides_naming_nothing_observed_are_refused_with_their_path() {
        let o = observed(4.0, 1, 1, NOON_S);
        let d = decide(&o, None, &mut Memory::default(), 1);
        let bad = Overrides {
            load_multiplier: [("llama".to_string(), 2.0), ("chat".to_string(), f64::NAN)].into(),
            inventory_change: [("TPU".to_string(), 4), ("H100-80GB".to_string(), -17)].into(),
            classes: [("gold".to_string(), ClassOverride::default())].into(),
        };
        let Err(Rejected::Overrides(problems)) = snapshot_for(&o.scenario, &d, &bad) else {
            panic!("refused");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "overrides.load_multiplier.chat",
                "overrides.load_multiplier.llama",
                "overrides.inventory_change.H100-80GB",
                "overrides.inventory_change.TPU",
                "overrides.classes.gold"
            ]
        );
    }
}
