//! A constructive start for a fair-share phase: water-filling by whole replicas.
//!
//! Max-min objectives are hard for branch-and-bound heuristics: to raise t every demand of the
//! tier must gain at once, and HiGHS's own heuristics often return only t = 0 (measured on the
//! 100-model scarce benchmark fleet: no incumbent with t > 0 in 10 s). This builds one directly:
//! starting from a feasible point (the previous phase's solution, whose floors it keeps), it
//! repeatedly gives one replica to the worst-served model of the tier, on the variant that
//! serves the most of it per GPU, until the worst-served model cannot grow (that fixes t); the
//! GPUs left then go where they add the most served req/s per GPU (the phase's second goal).
//! The result is a feasible point of the phase's MILP, handed to HiGHS as its starting
//! incumbent.
//!
//! Only ordinary (role `both`) models are grown; a disaggregated model keeps its start.

use std::collections::HashMap;

use good_lp::Variable;

use super::milp::{DemandId, Handles, can_share, tier_weights};
use crate::analyze::Role;
use crate::analyze::fleet::VariantCapacity;
use crate::scenario::Snapshot;

/// Grow `base` (one value per column, feasible for the phase) into a start for the fair-share
/// phase of `tier`.
pub fn water_fill(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    handles: &Handles,
    tier: &[DemandId],
    earlier: &[DemandId],
    base: &[f64],
) -> Vec<f64> {
    let column: HashMap<Variable, usize> = handles.columns.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let mut point = base.to_vec();
    let get = |point: &[f64], var: Variable| point[column[&var]];

    let weights = tier_weights(snapshot, tier);
    let weight_of: HashMap<DemandId, f64> = tier.iter().copied().zip(weights.iter().copied()).collect();
    let is_earlier = |d: &DemandId| earlier.contains(d);

    // Models this tier can grow: ordinary, with a demand in the tier.
    let mut models: Vec<usize> = tier.iter().map(|d| d.0).collect();
    models.dedup();
    models.retain(|&m| snapshot.variants.iter().all(|v| v.model != m || v.role == Role::Both));

    // GPUs left per type at the base point.
    let mut free: Vec<f64> = snapshot.accelerators.iter().map(|a| f64::from(a.gpus)).collect();
    let mut replicas: Vec<f64> = handles.replicas.iter().map(|&n| get(&point, n).round()).collect();
    for (v, variant) in snapshot.variants.iter().enumerate() {
        free[variant.accelerator] -= replicas[v] * f64::from(variant.gpus_per_replica);
    }

    // Per model: the replica-capacity earlier tiers use on each variant (kept as is), and the
    // share of the model's tier demand one spare replica of each variant can carry.
    struct Grown {
        model: usize,
        demands: Vec<DemandId>,
        /// Per variant of the model: (variant, replica-capacity used by earlier tiers, r_v).
        variants: Vec<(usize, f64, f64)>,
        weight: f64,
    }
    let grown: Vec<Grown> = models
        .iter()
        .map(|&m| {
            let demands: Vec<DemandId> = tier.iter().copied().filter(|d| d.0 == m).collect();
            let variants = snapshot
                .variants
                .iter()
                .enumerate()
                .filter(|(_, v)| v.model == m)
                .filter_map(|(v, _)| {
                    // Every capacity row j of the variant (one per class it may carry) must keep
                    // holding: take the tightest row both for what earlier tiers use and for how
                    // much of this tier one replica carries.
                    let rows: Vec<usize> = handles.traffic[v].iter().map(|(j, _)| *j).collect();
                    // Classes that may not share a replica need the solver's binary choice.
                    if rows.iter().any(|&a| rows.iter().any(|&b| !can_share(&caps[v], a, b))) {
                        return None;
                    }
                    let cross = &caps[v].cross_rps;
                    let used = rows
                        .iter()
                        .map(|&j| {
                            handles.traffic[v]
                                .iter()
                                .filter(|(k, _)| is_earlier(&(m, *k)))
                                .map(|&(k, x)| get(&point, x) / cross[k][j])
                                .sum::<f64>()
                        })
                        .fold(0.0, f64::max);
                    // r_v = 1 / max_j Σ_d λ_d/κ_{v,d,j}: the fraction of the tier's demand one replica serves.
                    let carries_all = demands.iter().all(|d| rows.contains(&d.1));
                    let load = rows
                        .iter()
                        .map(|&j| {
                            demands
                                .iter()
                                .map(|d| snapshot.models[m].demands[d.1].arrival_rps / cross[d.1][j])
                                .sum::<f64>()
                        })
                        .fold(0.0, f64::max);
                    (carries_all && load > 0.0 && load.is_finite()).then_some((v, used, 1.0 / load))
                })
                .collect();
            let weight = demands.iter().map(|d| weight_of[d]).fold(0.0, f64::max);
            Grown { model: m, demands, variants, weight }
        })
        .collect();

    let served = |g: &Grown, replicas: &[f64]| -> f64 {
        g.variants.iter().map(|&(v, used, r)| (replicas[v] - used).max(0.0) * r).sum::<f64>().min(1.0)
    };

    let fits = |v: usize, replicas: &[f64], free: &[f64]| {
        let variant = &snapshot.variants[v];
        replicas[v] + 1.0 <= f64::from(variant.max_replicas)
            && free[variant.accelerator] >= f64::from(variant.gpus_per_replica)
    };
    let gpus = |v: usize| f64::from(snapshot.variants[v].gpus_per_replica);

    // Water-filling: one replica at a time to the worst-served model (ties by model order),
    // until the worst-served model cannot grow: that fixes t.
    loop {
        let next = grown
            .iter()
            .enumerate()
            .map(|(i, g)| (i, served(g, &replicas) / g.weight))
            .filter(|(_, level)| *level < 1.0 - 1e-12)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let Some((i, _)) = next else { break };
        let best = grown[i]
            .variants
            .iter()
            .filter(|&&(v, _, _)| fits(v, &replicas, &free))
            .max_by(|a, b| (a.2 / gpus(a.0)).total_cmp(&(b.2 / gpus(b.0))).then(b.0.cmp(&a.0)))
            .map(|&(v, _, _)| v);
        match best {
            Some(v) => {
                replicas[v] += 1.0;
                free[snapshot.variants[v].accelerator] -= gpus(v);
            }
            None => {
                break;
            }
        }
    }

    // Then the phase's second goal, total served traffic: each remaining replica goes where it
    // adds the most req/s per GPU.
    let tier_rps = |g: &Grown| -> f64 { g.demands.iter().map(|d| snapshot.models[d.0].demands[d.1].arrival_rps).sum() };
    loop {
        let mut best: Option<(usize, f64)> = None;
        for g in &grown {
            let room = 1.0 - served(g, &replicas);
            if room <= 1e-12 {
                continue;
            }
            for &(v, used, r) in &g.variants {
                if !fits(v, &replicas, &free) {
                    continue;
                }
                // A replica below what earlier tiers use adds nothing for this tier.
                let spare = (replicas[v] + 1.0 - used).clamp(0.0, 1.0);
                let gain = (spare * r).min(room) * tier_rps(g) / gpus(v);
                if gain > 1e-12 && best.is_none_or(|(_, b)| gain > b) {
                    best = Some((v, gain));
                }
            }
        }
        let Some((v, _)) = best else { break };
        replicas[v] += 1.0;
        free[snapshot.variants[v].accelerator] -= gpus(v);
    }

    // Write the grown models back: replicas, routing, served fractions.
    for g in &grown {
        let s = served(g, &replicas);
        let supply: f64 = g.variants.iter().map(|&(v, used, r)| (replicas[v] - used).max(0.0) * r).sum();
        for &(v, used, r) in &g.variants {
            point[column[&handles.replicas[v]]] = replicas[v];
            let share = if supply > 0.0 { (replicas[v] - used).max(0.0) * r / supply } else { 0.0 };
            for &(k, x) in &handles.traffic[v] {
                if g.demands.contains(&(g.model, k)) {
                    point[column[&x]] = s * snapshot.models[g.model].demands[k].arrival_rps * share;
                } else if !is_earlier(&(g.model, k)) {
                    point[column[&x]] = 0.0; // later tiers start unserved
                }
            }
        }
        for d in &g.demands {
            point[column[&handles.served[d]]] = s;
        }
        for (k, _) in snapshot.models[g.model].demands.iter().enumerate() {
            let d = (g.model, k);
            if !g.demands.contains(&d) && !is_earlier(&d) && handles.served.contains_key(&d) {
                point[column[&handles.served[&d]]] = 0.0;
            }
        }
    }
    // Carrier indicators follow the traffic.
    for (v, z) in handles.carries.iter().enumerate() {
        for &(k, var) in z {
            let x = handles.traffic[v].iter().find(|(kk, _)| *kk == k).map(|p| p.1);
            let carried = x.is_some_and(|x| point[column[&x]] > 0.0);
            point[column[&var]] = if carried { 1.0 } else { 0.0 };
        }
    }
    // Transition columns follow the replicas; t is the tier's weighted minimum.
    for (v, variant) in snapshot.variants.iter().enumerate() {
        let n = point[column[&handles.replicas[v]]];
        let delta = n - f64::from(variant.current_replicas);
        let (up, down) = handles.changes[v];
        point[column[&up]] = delta.max(0.0);
        point[column[&down]] = (-delta).max(0.0);
    }
    let t =
        tier.iter().zip(&weights).map(|(d, w)| point[column[&handles.served[d]]] / w).fold(1.0_f64, f64::min).max(0.0);
    point[column[&handles.t]] = t;
    point
}
