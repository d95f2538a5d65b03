//! What a least-loaded router does to a plan that mixes variants of different speed.
//!
//! The plan routes each class's traffic to a model's variants at rates it chose, but llm-d's
//! endpoint picker (and `allot simulate`) sends each request to the replica with the fewest
//! requests per batch slot. That balances occupancy, so every replica of the model runs at
//! about the same utilization λ/μ whatever the plan's split, and where a plan mixes a fast and
//! a slow variant the slow one gets more than its capacity at the SLO (measured on the
//! conversation trace: docs/evaluation.md). This check says so in the plan's warnings; it does
//! not change the plan.

use crate::analyze::Role;
use crate::analyze::fleet::{self, VariantCapacity};
use crate::scenario::Snapshot;

/// A variant is reported when the router's share loads it this much past its capacity rows
/// (and past what the plan routes to it).
const OVERLOAD: f64 = 1.1;

/// Warnings for the variants that a least-loaded router would load past their capacity at the
/// SLO: per model, each class's routed traffic split in proportion to n_v·μ_v (equal
/// utilization), then the variant's own-class capacity rows Σ_k x_k / κ_k against its replicas.
/// Variants without a profile (μ unknown) leave their model unchecked.
pub fn least_loaded_overloads(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    replicas: &[u32],
    traffic: &[Vec<(usize, f64)>],
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (m, model) in snapshot.models.iter().enumerate() {
        let used: Vec<usize> = (0..snapshot.variants.len())
            .filter(|&v| snapshot.variants[v].model == m && snapshot.variants[v].role == Role::Both && replicas[v] > 0)
            .collect();
        if used.len() < 2 {
            continue;
        }
        // Per used variant: Σ_k (router's share of class k) / κ_{v,k}, and the plan's own.
        let mut router_rows = vec![0.0; used.len()];
        let mut plan_rows = vec![0.0; used.len()];
        let mut checked = true;
        for (k, demand) in model.demands.iter().enumerate() {
            let routed = |v: usize| traffic[v].iter().filter(|(kk, _)| *kk == k).map(|(_, x)| x).sum::<f64>();
            let total: f64 = used.iter().map(|&v| routed(v)).sum();
            if total <= 0.0 {
                continue;
            }
            let mu: Option<Vec<f64>> = used
                .iter()
                .map(|&v| fleet::replica_model(&snapshot.variants[v], demand).map(|r| r.saturation_rps()))
                .collect();
            let Some(mu) = mu.filter(|mu| mu.iter().all(|x| x.is_finite() && *x > 0.0)) else {
                checked = false;
                break;
            };
            let pool: f64 = used.iter().zip(&mu).map(|(&v, mu)| f64::from(replicas[v]) * mu).sum();
            for (i, (&v, mu_v)) in used.iter().zip(&mu).enumerate() {
                let share = total * f64::from(replicas[v]) * mu_v / pool;
                let kappa = caps[v].per_demand[k].rps;
                router_rows[i] += if kappa > 0.0 { share / kappa } else { f64::INFINITY };
                plan_rows[i] += if kappa > 0.0 { routed(v) / kappa } else { 0.0 };
            }
        }
        if !checked {
            continue;
        }
        for (i, &v) in used.iter().enumerate() {
            let n = f64::from(replicas[v]);
            let (router, planned) = (router_rows[i] / n, plan_rows[i] / n);
            if router > OVERLOAD && router > planned * OVERLOAD {
                let load = if router.is_finite() {
                    format!("{:.0} % of its capacity at the SLO", 100.0 * router)
                } else {
                    "requests of a class it cannot serve within its SLO".to_string()
                };
                warnings.push(format!(
                    "model {}: a least-loaded router (llm-d's endpoint picker) balances occupancy, not this plan's rates, and would give variant {} about {load} (the plan routes it {:.0} %): route by the plan's weights, or keep the model on one accelerator type",
                    model.name,
                    snapshot.variants[v].name,
                    100.0 * planned
                ));
            }
        }
    }
    warnings
}
