//! Capacity of every variant for every class of its model: the analysis step of a plan.

use super::capacity::{Capacity, CapacityLimit, Slo, capacities_at_slos, capacity_at_slo};
use super::queue::ReplicaModel;
use crate::scenario::Snapshot;
use crate::scenario::snapshot::{Demand, Variant};

/// κ_{v,k}: capacity of one replica of variant `v` for each demand of its model, in the order of
/// `Model::demands`.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantCapacity {
    pub per_demand: Vec<Capacity>,
    /// κ_{v,k,j} (req/s): capacity for demand k's requests at demand j's SLO, `[k][j]`. Classes
    /// sharing a replica share its queue, so class j's SLO holds only while
    /// Σ_k x_{v,k} / κ_{v,k,j} ≤ n_v. The diagonal equals `per_demand`.
    pub cross_rps: Vec<Vec<f64>>,
}

/// The replica model of a variant under one demand's workload, when it has a profile.
pub fn replica_model(variant: &Variant, demand: &Demand) -> Option<ReplicaModel> {
    variant.profile.as_ref().map(|p| ReplicaModel::new(p.params, variant.engine, variant.role, demand.workload))
}

/// Capacity of one variant for one demand: a measured capacity wins over the profile's.
pub fn capacity(variant: &Variant, demand: &Demand, max_utilization: f64) -> Capacity {
    if let Some(&rps) = variant.measured_capacity_rps.get(&demand.class) {
        return Capacity { rps, limited_by: CapacityLimit::Measured, infeasible: None };
    }
    match replica_model(variant, demand) {
        Some(model) => capacity_at_slo(&model, &demand.slo, max_utilization),
        None => Capacity {
            rps: 0.0,
            limited_by: CapacityLimit::Measured,
            infeasible: Some("no profile and no measured capacity".into()),
        },
    }
}

/// Capacity of `v` for each of `demands`: the demands with the same request sizes share one
/// replica model and one search ([`capacities_at_slos`]); a measured capacity wins.
fn shared_capacities(v: &Variant, demands: &[Demand], max_utilization: f64) -> Vec<Capacity> {
    let mut out: Vec<Option<Capacity>> = vec![None; demands.len()];
    for (first, d) in demands.iter().enumerate() {
        if out[first].is_some() {
            continue;
        }
        if v.measured_capacity_rps.contains_key(&d.class) || v.profile.is_none() {
            out[first] = Some(capacity(v, d, max_utilization));
            continue;
        }
        let group: Vec<usize> = (first..demands.len())
            .filter(|&j| {
                out[j].is_none()
                    && demands[j].workload == d.workload
                    && !v.measured_capacity_rps.contains_key(&demands[j].class)
            })
            .collect();
        let slos: Vec<Slo> = group.iter().map(|&j| demands[j].slo).collect();
        let found = match replica_model(v, d) {
            Some(model) => capacities_at_slos(&model, &slos, max_utilization),
            None => group.iter().map(|&j| capacity(v, &demands[j], max_utilization)).collect(),
        };
        for (j, c) in group.into_iter().zip(found) {
            out[j] = Some(c);
        }
    }
    out.into_iter().map(|c| c.expect("every demand sized")).collect()
}

/// Capacities of every variant, indexed like `snapshot.variants`.
pub fn capacities(snapshot: &Snapshot) -> Vec<VariantCapacity> {
    // Variants are independent: sized on every core, each thread a contiguous run of variants,
    // joined in order, so the result does not depend on the threads.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
    let chunk = snapshot.variants.len().div_ceil(threads).max(1);
    if threads == 1 || snapshot.variants.len() < 8 {
        return snapshot.variants.iter().map(|v| variant_capacity(snapshot, v)).collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = snapshot
            .variants
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|v| variant_capacity(snapshot, v)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("capacity thread")).collect()
    })
}

fn variant_capacity(snapshot: &Snapshot, v: &Variant) -> VariantCapacity {
    let max_utilization = snapshot.settings.max_utilization;
    let demands = &snapshot.models[v.model].demands;
    let per_demand = shared_capacities(v, demands, max_utilization);
    let cross_rps = demands
        .iter()
        .enumerate()
        .map(|(k, dk)| {
            demands
                .iter()
                .enumerate()
                .map(|(j, dj)| {
                    if k == j || dk.workload == dj.workload || v.measured_capacity_rps.contains_key(&dj.class) {
                        // Same requests (or a measured figure): the class's own capacity.
                        per_demand[j].rps
                    } else {
                        capacity(v, &Demand { slo: dj.slo, ..dk.clone() }, max_utilization).rps
                    }
                })
                .collect()
        })
        .collect();
    VariantCapacity { per_demand, cross_rps }
}
