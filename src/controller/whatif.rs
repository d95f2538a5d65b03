//! Live what-if: edit the latest observed scenario (load, inventory, SLOs, priorities), plan it,
//! and compare with what the controller currently wants. Pure; the REST API calls it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Decision;
use crate::plan::Plan;
use crate::scenario::{Problem, Scenario};

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
    /// What-if cost minus the current decision's planned cost, USD per hour.
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
        cost_change_usd_per_hour: plan.cost_usd_per_hour - current.plan.cost_usd_per_hour,
        diff,
        plan,
    }
}
