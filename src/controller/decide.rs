//! One cycle's decision, pure: observation + previous decision + stabilizer history → decision.
//!
//! 1. Models with missing or stale load are pinned at what they run (or what was last decided,
//!    whichever is more): never scaled down on missing data, and their GPUs stay accounted.
//! 2. The core plans the snapshot unchanged ([`crate::optimize::plan`]).
//! 3. Each variant's planned replicas pass HPA's behavior ([`super::stabilize`]). When that keeps a
//!    variant off its plan (a scale-down window holding GPUs, a scale-up rate limit), the core
//!    plans again with those variants pinned, so the rest of the fleet is planned around the GPUs
//!    they really hold: the applied plan never counts on GPUs that are not free.

use std::collections::BTreeMap;

use super::stabilize::Stabilizer;
use super::{Decision, Observed, PodCounts, VariantDecision};
use crate::plan::{Plan, PlanStatus};
use crate::scenario::Snapshot;

/// Decide what every variant should run this cycle; `previous` is the last decision, if any.
/// The observation's time drives the stabilization windows.
pub fn decide(observed: &Observed, previous: Option<&Decision>, stabilizer: &mut Stabilizer, cycle: u64) -> Decision {
    let now_s = observed.at_s;
    let snapshot = &observed.snapshot;
    let previous_desired: BTreeMap<&str, u32> =
        previous.map(|p| p.variants.iter().map(|v| (v.name.as_str(), v.desired)).collect()).unwrap_or_default();
    let current: Vec<u32> = snapshot.variants.iter().map(|v| v.current_replicas).collect();
    // What a held variant keeps: what runs, or what was last decided if more is on its way.
    let hold =
        |i: usize| current[i].max(previous_desired.get(snapshot.variants[i].name.as_str()).copied().unwrap_or(0));

    // 1. Holds for models without fresh load.
    let mut pins: BTreeMap<usize, (u32, String)> = BTreeMap::new();
    for (i, v) in snapshot.variants.iter().enumerate() {
        let model = &snapshot.models[v.model].name;
        if let Some(reason) = observed.stale_models.get(model) {
            pins.insert(i, (hold(i), format!("held: {reason}")));
        }
    }
    let first = crate::optimize::plan(&pinned(snapshot, &pins));

    let mut desired: Vec<(u32, Option<String>)> = Vec::with_capacity(snapshot.variants.len());
    let planned: Vec<u32> = snapshot.variants.iter().map(|v| replicas_in(&first, &v.name).unwrap_or(0)).collect();
    let mut plan = first;
    if plan.status == PlanStatus::Fallback {
        // No plan: keep what runs (the fallback plan's replicas are the current ones).
        desired.extend((0..snapshot.variants.len()).map(|i| (hold(i), Some("held: no plan was found in time".into()))));
    } else {
        // 3. Stabilize; pin the variants kept off their plan and plan the rest around them.
        let mut limited = pins.clone();
        for (i, v) in snapshot.variants.iter().enumerate() {
            if pins.contains_key(&i) {
                continue;
            }
            let s = stabilizer.stabilize(&v.name, now_s, current[i], planned[i]);
            if let Some(limit) = s.limit.filter(|_| s.replicas != planned[i]) {
                limited.insert(i, (s.replicas, format!("stabilized: {}", limit.as_str())));
            }
        }
        if limited.len() > pins.len() {
            let second = crate::optimize::plan(&pinned(snapshot, &limited));
            if second.status != PlanStatus::Fallback {
                plan = second;
            }
        }
        for (i, v) in snapshot.variants.iter().enumerate() {
            match limited.get(&i) {
                Some((n, reason)) => desired.push((*n, Some(reason.clone()))),
                None => desired.push((replicas_in(&plan, &v.name).unwrap_or(planned[i]), None)),
            }
        }
    }

    let mut variants = Vec::with_capacity(snapshot.variants.len());
    for (i, v) in snapshot.variants.iter().enumerate() {
        let (replicas, reason) = desired[i].clone();
        stabilizer.record(&v.name, now_s, current[i], replicas);
        variants.push(VariantDecision {
            name: v.name.clone(),
            model: snapshot.models[v.model].name.clone(),
            accelerator: snapshot.accelerators[v.accelerator].name.clone(),
            role: v.role,
            pods: observed.pods.get(i).copied().unwrap_or(PodCounts { ready: current[i], ..PodCounts::default() }),
            current: current[i],
            planned: planned[i],
            desired: replicas,
            reason,
        });
    }
    stabilizer.retain(|name| snapshot.variants.binary_search_by(|v| v.name.as_str().cmp(name)).is_ok());
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
        changed,
    }
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

/// A stable digest of a snapshot (FNV-1a over its debug form): equal snapshots, equal ids.
pub fn snapshot_id(snapshot: &Snapshot) -> String {
    let text = format!("{snapshot:?}");
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
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
        let mut stabilizer = Stabilizer::new(Behavior::default());
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
        let mut stabilizer = Stabilizer::new(Behavior::default());
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
        let mut stabilizer = Stabilizer::new(Behavior::default());
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
            let mut stabilizer = Stabilizer::new(Behavior::default());
            decide(&observed(7.0, 1, 1, 0.0), None, &mut stabilizer, 1)
        };
        let (a, b) = (run(), run());
        assert_eq!(a.snapshot_id, b.snapshot_id);
        assert_eq!(desired(&a), desired(&b));
        assert!(a.changed);
    }
}
