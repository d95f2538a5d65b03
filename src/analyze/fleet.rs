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

/// Capacity of `v` for each of `demands` and, where two demands' request sizes differ, for each
/// one's requests at the other's SLO (`[k][j]`). The demands with the same request sizes share
/// one replica model and one search over every SLO asked of those sizes
/// ([`capacities_at_slos`]: the same answers as one search each, for a fraction of the steady
/// states); a measured capacity wins.
fn shared_capacities(v: &Variant, demands: &[Demand], max_utilization: f64) -> (Vec<Capacity>, Vec<Vec<Option<f64>>>) {
    let n = demands.len();
    let measured = |j: usize| v.measured_capacity_rps.contains_key(&demands[j].class);
    let mut out: Vec<Option<Capacity>> = vec![None; n];
    let mut cross: Vec<Vec<Option<f64>>> = vec![vec![None; n]; n];
    for (first, d) in demands.iter().enumerate() {
        if out[first].is_some() {
            continue;
        }
        let others: Vec<usize> = (0..n).filter(|&j| demands[j].workload != d.workload && !measured(j)).collect();
        let model = if measured(first) { None } else { replica_model(v, d) };
        let Some(model) = model else {
            out[first] = Some(capacity(v, d, max_utilization));
            for &j in &others {
                cross[first][j] = Some(capacity(v, &Demand { slo: demands[j].slo, ..d.clone() }, max_utilization).rps);
            }
            continue;
        };
        let group: Vec<usize> =
            (first..n).filter(|&j| out[j].is_none() && demands[j].workload == d.workload && !measured(j)).collect();
        let slos: Vec<Slo> = group.iter().chain(&others).map(|&j| demands[j].slo).collect();
        let found = capacities_at_slos(&model, &slos, max_utilization);
        let (own, at_others) = found.split_at(group.len());
        for (&j, c) in group.iter().zip(own) {
            out[j] = Some(c.clone());
            for (&o, c) in others.iter().zip(at_others) {
                cross[j][o] = Some(c.rps);
            }
        }
    }
    (out.into_iter().map(|c| c.expect("every demand sized")).collect(), cross)
}

/// Capacities of every variant, indexed like `snapshot.variants`.
pub fn capacities(snapshot: &Snapshot) -> Vec<VariantCapacity> {
    // Variants are independent: sized on every core, each thread a contiguous run of variants,
    // joined in order, so the result does not depend on the threads. (Taking variants one at a
    // time from a shared counter measured the same on the medium fleet: the runs balance.)
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
    let (per_demand, cross) = shared_capacities(v, demands, max_utilization);
    let cross_rps = (0..demands.len())
        .map(|k| {
            (0..demands.len())
                .map(|j| {
                    // Same requests (or a measured figure): the class's own capacity.
                    cross[k][j].filter(|_| k != j).unwrap_or(per_demand[j].rps)
                })
                .collect()
        })
        .collect();
    VariantCapacity { per_demand, cross_rps }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared searches give what one search per (requests, SLO) pair gives: per demand, and
    /// for each demand's requests at every other demand's SLO where their sizes differ.
    #[test]
    fn shared_searches_equal_one_search_per_pair() {
        let text = include_str!("../../examples/heterogeneous.yaml").replace(
            "class: standard, arrival_rate_rps: 1.5, input_tokens: 1155, output_tokens: 211",
            "class: standard, arrival_rate_rps: 1.5, input_tokens: 3000, output_tokens: 400",
        );
        let snapshot = crate::scenario::validate(&crate::scenario::parse(&text).expect("parses")).expect("valid");
        let mut checked = 0;
        for (v, cap) in snapshot.variants.iter().zip(capacities(&snapshot)) {
            let demands = &snapshot.models[v.model].demands;
            for (k, dk) in demands.iter().enumerate() {
                assert_eq!(cap.per_demand[k], capacity(v, dk, snapshot.settings.max_utilization), "{}", v.name);
                for (j, dj) in demands.iter().enumerate() {
                    let alone = if dk.workload == dj.workload {
                        cap.per_demand[j].rps
                    } else {
                        checked += 1;
                        capacity(v, &Demand { slo: dj.slo, ..dk.clone() }, snapshot.settings.max_utilization).rps
                    };
                    assert_eq!(cap.cross_rps[k][j], alone, "{} [{k}][{j}]", v.name);
                }
            }
        }
        assert!(checked >= 4, "the premise: pairs of different sizes ({checked})");
    }
}
