//! From solver values to the plan document: predictions, costs, served fractions and the
//! constraints that bind.

use std::collections::BTreeMap;

use crate::analyze::Role;
use crate::analyze::fleet::{VariantCapacity, replica_model};
use crate::analyze::queue::Workload;
use crate::plan::*;
use crate::scenario::Snapshot;

use super::milp::DemandId;

/// Served fractions below 1 by more than this are reported as unmet.
const UNMET_TOLERANCE: f64 = 1e-4;

/// What the solve decided.
pub struct Outcome {
    pub replicas: Vec<u32>,
    /// Per variant: (demand position in its model, req/s).
    pub traffic: Vec<Vec<(usize, f64)>>,
    pub mode: PlanMode,
    pub status: PlanStatus,
    pub phases: Vec<PhaseReport>,
    pub tiers: Vec<TierReport>,
    pub idle: IdleCheck,
    pub solve_ms: f64,
    pub mip_gap: f64,
    pub objective: f64,
    pub extra_warnings: Vec<String>,
    /// Models whose replicas were (or would have been, but for the cost) re-chosen for a
    /// least-loaded router: the `least_loaded_routing` bindings.
    pub rebalanced: Vec<super::router::Rebalanced>,
    /// Whether to predict each variant's latency (not for a refused problem).
    pub predict: bool,
}

/// Route each demand over given replicas in proportion to their capacity (used when no solve
/// succeeded, to predict what the current replicas achieve).
pub fn route_proportionally(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    servable: &[DemandId],
    replicas: &[u32],
) -> Vec<Vec<(usize, f64)>> {
    let mut traffic: Vec<Vec<(usize, f64)>> = vec![Vec::new(); snapshot.variants.len()];
    // Each replica's capacity is shared by all demands of its model in proportion to their load.
    for &(m, k) in servable {
        let model = &snapshot.models[m];
        let total_rps: f64 = model.demands.iter().map(|d| d.arrival_rps).sum();
        let share = model.demands[k].arrival_rps / total_rps;
        let both: Vec<usize> = (0..snapshot.variants.len())
            .filter(|&v| snapshot.variants[v].model == m && snapshot.variants[v].role == Role::Both)
            .collect();
        let supply: f64 = both.iter().map(|&v| f64::from(replicas[v]) * caps[v].per_demand[k].rps * share).sum();
        let served = model.demands[k].arrival_rps.min(supply);
        for &v in &both {
            let own = f64::from(replicas[v]) * caps[v].per_demand[k].rps * share;
            if own > 0.0 {
                traffic[v].push((k, served * own / supply));
            }
        }
    }
    traffic
}

pub fn assemble(snapshot: &Snapshot, caps: &[VariantCapacity], outcome: Outcome) -> Plan {
    let Outcome {
        replicas,
        traffic,
        mode,
        status,
        phases,
        tiers,
        idle,
        solve_ms,
        mip_gap,
        objective,
        extra_warnings,
        rebalanced,
        predict: with_predictions,
    } = outcome;
    let mut warnings = snapshot.warnings.clone();
    warnings.extend(extra_warnings);

    // Served traffic per demand: both-variants plus the decode side of P/D (each disaggregated
    // request passes one prefill and one decode replica; count it once).
    let mut served: BTreeMap<DemandId, f64> = BTreeMap::new();
    for (v, variant) in snapshot.variants.iter().enumerate() {
        if variant.role == Role::Prefill {
            continue;
        }
        for &(k, x) in &traffic[v] {
            *served.entry((variant.model, k)).or_default() += x;
        }
    }

    let variants: Vec<VariantPlan> = snapshot
        .variants
        .iter()
        .enumerate()
        .map(|(v, variant)| {
            let model = &snapshot.models[variant.model];
            let class_name = |k: usize| snapshot.classes[model.demands[k].class].name.clone();
            let load_by_class_rps: BTreeMap<String, f64> =
                traffic[v].iter().filter(|(_, x)| *x > 0.0).map(|&(k, x)| (class_name(k), x)).collect();
            let capacity_rps: BTreeMap<String, f64> =
                caps[v].per_demand.iter().enumerate().map(|(k, c)| (class_name(k), c.rps)).collect();
            VariantPlan {
                name: variant.name.clone(),
                model: model.name.clone(),
                accelerator: snapshot.accelerators[variant.accelerator].name.clone(),
                role: variant.role,
                gpus_per_replica: variant.gpus_per_replica,
                current_replicas: variant.current_replicas,
                replicas: replicas[v],
                min_replicas: variant.min_replicas,
                max_replicas: variant.max_replicas,
                capacity_rps,
                // fold from +0.0: an empty f64 sum is -0.0, which prints as "-0.00"
                load_rps: traffic[v].iter().fold(0.0, |sum, (_, x)| sum + x),
                load_by_class_rps,
                predicted: if with_predictions { predict(snapshot, caps, v, replicas[v], &traffic[v]) } else { None },
                cost_usd_per_hour: f64::from(replicas[v]) * variant.replica_cost_usd_per_hour(&snapshot.accelerators),
            }
        })
        .collect();

    let mut models = Vec::new();
    let mut binding: Vec<Binding> = rebalanced
        .iter()
        .filter(|r| r.applied)
        .map(|r| Binding::LeastLoadedRouting {
            model: snapshot.models[r.model].name.clone(),
            extra_cost_usd_per_hour: r.extra_cost_usd_per_hour(),
        })
        .collect();
    for (m, model) in snapshot.models.iter().enumerate() {
        for (k, d) in model.demands.iter().enumerate() {
            let class = &snapshot.classes[d.class];
            let served_rps = served.get(&(m, k)).copied().unwrap_or(0.0).min(d.arrival_rps);
            let served_fraction = if d.arrival_rps > 0.0 { served_rps / d.arrival_rps } else { 1.0 };
            let unmet_rps = (d.arrival_rps - served_rps).max(0.0);
            models.push(ModelPlan {
                name: model.name.clone(),
                class: class.name.clone(),
                priority: class.priority,
                demand_rps: d.arrival_rps,
                served_rps,
                served_fraction,
                unmet_rps,
            });
            let feasible = snapshot
                .variants
                .iter()
                .enumerate()
                .any(|(v, variant)| variant.model == m && caps[v].per_demand[k].rps > 0.0);
            if d.arrival_rps > 0.0 && !feasible {
                let reasons = snapshot
                    .variants
                    .iter()
                    .enumerate()
                    .filter(|(_, variant)| variant.model == m)
                    .filter_map(|(v, variant)| {
                        caps[v].per_demand[k].infeasible.as_ref().map(|why| format!("{}: {why}", variant.name))
                    })
                    .collect();
                binding.push(Binding::NoFeasibleVariant {
                    model: model.name.clone(),
                    class: class.name.clone(),
                    reasons,
                });
            } else if served_fraction < 1.0 - UNMET_TOLERANCE {
                binding.push(Binding::DemandUnmet {
                    model: model.name.clone(),
                    class: class.name.clone(),
                    unmet_rps,
                    served_fraction,
                });
            }
        }
    }

    let accelerators: Vec<AcceleratorPlan> = snapshot
        .accelerators
        .iter()
        .enumerate()
        .map(|(a, acc)| {
            let on_type = |counts: &dyn Fn(usize) -> u32| -> u32 {
                snapshot
                    .variants
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.accelerator == a)
                    .map(|(v, variant)| counts(v) * variant.gpus_per_replica)
                    .sum()
            };
            let used_gpus = on_type(&|v| replicas[v]);
            let current_gpus = on_type(&|v| snapshot.variants[v].current_replicas);
            let free_gpus = acc.gpus.saturating_sub(used_gpus);
            let smallest_replica = snapshot
                .variants
                .iter()
                .filter(|v| v.accelerator == a && v.max_replicas > 0)
                .map(|v| v.gpus_per_replica)
                .min();
            if smallest_replica.is_some_and(|g| free_gpus < g) {
                binding.push(Binding::InventoryExhausted {
                    accelerator: acc.name.clone(),
                    used_gpus,
                    available_gpus: acc.gpus,
                });
            }
            AcceleratorPlan {
                name: acc.name.clone(),
                available_gpus: acc.gpus,
                current_gpus,
                used_gpus,
                free_gpus,
                cost_usd_per_hour: f64::from(used_gpus) * acc.cost_usd_per_gpu_hour,
            }
        })
        .collect();

    for (v, variant) in snapshot.variants.iter().enumerate() {
        let load: f64 = traffic[v].iter().map(|(_, x)| x).sum();
        let inventory_cap = snapshot.accelerators[variant.accelerator].gpus / variant.gpus_per_replica;
        if replicas[v] == variant.max_replicas && variant.max_replicas < inventory_cap && load > 0.0 {
            binding.push(Binding::MaxReplicas { variant: variant.name.clone(), replicas: replicas[v] });
        }
        if replicas[v] > 0 && replicas[v] == variant.min_replicas && load <= 0.0 {
            binding.push(Binding::MinReplicas { variant: variant.name.clone(), replicas: replicas[v] });
        }
    }
    for (m, model) in snapshot.models.iter().enumerate() {
        let Some(ratio) = model.pd_ratio else { continue };
        let sum = |role: Role| -> u32 { snapshot.variants_in_role(m, role).map(|v| replicas[v]).sum() };
        let (prefill, decode) = (sum(Role::Prefill), sum(Role::Decode));
        let (p, d) = (f64::from(prefill), f64::from(decode));
        for (bound, at) in [("min", (p - ratio.min * d).abs() < 1e-9), ("max", (p - ratio.max * d).abs() < 1e-9)] {
            if at && decode > 0 {
                binding.push(Binding::PdRatio {
                    model: model.name.clone(),
                    bound: bound.into(),
                    prefill_replicas: prefill,
                    decode_replicas: decode,
                });
            }
        }
    }

    for (v, variant) in snapshot.variants.iter().enumerate() {
        for (k, cap) in caps[v].per_demand.iter().enumerate() {
            let demand = &snapshot.models[variant.model].demands[k];
            if let (Some(why), true) = (&cap.infeasible, demand.arrival_rps > 0.0) {
                warnings.push(format!(
                    "variant {} cannot serve class {}: {why}",
                    variant.name, snapshot.classes[demand.class].name
                ));
            }
        }
    }

    let cost_usd_per_hour: f64 = variants.iter().map(|v| v.cost_usd_per_hour).sum();
    let transition_cost_usd_per_hour = transition_cost(snapshot, &replicas);
    let current_cost_usd_per_hour: f64 = snapshot
        .variants
        .iter()
        .map(|v| f64::from(v.current_replicas) * v.replica_cost_usd_per_hour(&snapshot.accelerators))
        .sum();
    Plan {
        scenario: snapshot.name.clone(),
        status,
        mode,
        solve_ms,
        mip_gap,
        objective: if status == PlanStatus::Fallback {
            objective
        } else {
            cost_usd_per_hour + transition_cost_usd_per_hour
        },
        cost_usd_per_hour,
        current_cost_usd_per_hour,
        transition_cost_usd_per_hour,
        variants,
        models,
        accelerators,
        binding,
        warnings,
        phases,
        tiers,
        idle_check: idle,
    }
}

/// A snapshot that is not planned: the current replicas, no capacity sizing (that is what a
/// problem too large would take too long for), the reason as a warning.
pub fn refused(snapshot: &Snapshot, reason: &str) -> Plan {
    let replicas: Vec<u32> = snapshot.variants.iter().map(|v| v.current_replicas).collect();
    let caps: Vec<VariantCapacity> = snapshot
        .variants
        .iter()
        .map(|v| {
            let k = snapshot.models[v.model].demands.len();
            let none = crate::analyze::capacity::Capacity {
                rps: 0.0,
                limited_by: crate::analyze::capacity::CapacityLimit::Measured,
                infeasible: None,
            };
            VariantCapacity { per_demand: vec![none; k], cross_rps: vec![vec![0.0; k]; k] }
        })
        .collect();
    assemble(
        snapshot,
        &caps,
        Outcome {
            replicas,
            traffic: vec![Vec::new(); snapshot.variants.len()],
            mode: PlanMode::AllServed,
            status: PlanStatus::Fallback,
            phases: Vec::new(),
            tiers: Vec::new(),
            idle: IdleCheck::default(),
            solve_ms: 0.0,
            mip_gap: 0.0,
            objective: 0.0,
            extra_warnings: vec![format!("not planned: {reason}; keeping the current replicas")],
            rebalanced: Vec::new(),
            predict: false,
        },
    )
}

/// The transition part of the cost objective (DESIGN §4): replicas added or removed, and replicas
/// placed on an accelerator type the model does not run on now.
fn transition_cost(snapshot: &Snapshot, replicas: &[u32]) -> f64 {
    let t = snapshot.settings.transition;
    let on_type_now = super::milp::current_types(snapshot);
    snapshot
        .variants
        .iter()
        .zip(replicas)
        .map(|(v, &n)| {
            let c = v.replica_cost_usd_per_hour(&snapshot.accelerators);
            let moved =
                if on_type_now[v.model][v.accelerator] { 0.0 } else { t.accelerator_move_fraction * c * f64::from(n) };
            t.replica_change_fraction * c * f64::from(n.abs_diff(v.current_replicas)) + moved
        })
        .sum()
}

/// Latency of one replica of variant `v` when `replicas` share `traffic` evenly.
fn predict(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    v: usize,
    replicas: u32,
    traffic: &[(usize, f64)],
) -> Option<Prediction> {
    if replicas == 0 {
        return None;
    }
    let variant = &snapshot.variants[v];
    let model = &snapshot.models[variant.model];
    let n = f64::from(replicas);
    let total: f64 = traffic.iter().map(|(_, x)| x).sum();
    let slo_capacity_used: f64 =
        traffic.iter().map(|&(k, x)| x / caps[v].per_demand[k].rps).filter(|u| u.is_finite()).sum::<f64>() / n;
    // The replica sees the mix of classes routed to it: their sizes mixed by rate.
    let workload = if total > 0.0 {
        let classes: Vec<(f64, Workload)> = traffic.iter().map(|&(k, x)| (x, model.demands[k].workload)).collect();
        Workload::mixture(&classes)
    } else {
        model.demands.first()?.workload
    };
    let demand0 = model.demands.first()?;
    let replica = replica_model(variant, &crate::scenario::snapshot::Demand { workload, ..demand0.clone() })?;
    let per_replica_rps = total / n;
    // Only the statistics the plan reports: a full `metrics()` searches twelve quantiles.
    let steady = replica.steady(per_replica_rps)?;
    let check = |t: Option<crate::analyze::capacity::Target>, value: &dyn Fn(crate::analyze::Statistic) -> f64| {
        t.map(|t| TargetCheck { statistic: t.statistic, predicted_ms: value(t.statistic), target_ms: t.ms })
    };
    let slo = traffic
        .iter()
        .filter(|(_, x)| *x > 0.0)
        .map(|&(k, _)| {
            let d = &model.demands[k];
            let ttft = if variant.role == Role::Decode { None } else { check(d.slo.ttft, &|s| steady.ttft_ms(s)) };
            let over = d.slo.itl.map(|t| t.over).unwrap_or_default();
            let itl = if variant.role == Role::Prefill { None } else { check(d.slo.itl, &|s| steady.itl_ms(s, over)) };
            let met =
                [&ttft, &itl].iter().all(|c| c.as_ref().is_none_or(|c| c.predicted_ms <= c.target_ms * (1.0 + 1e-6)));
            SloCheck { class: snapshot.classes[d.class].name.clone(), ttft, itl, met }
        })
        .collect();
    Some(Prediction {
        utilization: per_replica_rps / replica.saturation_rps(),
        slo_capacity_used,
        ttft_ms: (variant.role != Role::Decode).then(|| steady.mean_ttft_ms()),
        itl_ms: (variant.role != Role::Prefill).then(|| steady.mean_itl_ms(crate::analyze::ItlPopulation::Request)),
        slo,
    })
}
