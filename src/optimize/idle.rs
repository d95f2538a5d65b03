//! The idle-GPU check of a fair-share plan: for each demand with unmet load, could one more
//! replica of one of its model's variants fit the free GPUs and serve more of it, lowering no
//! one? Each such replica is added (most important tier first, then most req/s per GPU), with
//! its traffic, until none is left.
//!
//! The served-traffic phases stop within a MIP gap, and a gap on served traffic is exactly room
//! for an idle GPU next to unmet demand; this closes it per plan, at the cost of a scan over the
//! variants per added replica (no solve).

use super::milp::{DemandId, can_share};
use super::{Decision, Run, TRAFFIC_EPSILON_RPS};
use crate::analyze::Role;

/// Unmet load up to this share of a demand counts as met: ten times the floors' tolerance
/// (FLOOR_TOLERANCE, 1e-6), so a floor relaxed by it never buys a replica.
const UNMET_SHARE: f64 = 1e-5;

/// A replica the check can add: (variant, the demand it serves, req/s it adds).
type IdleReplica = (usize, DemandId, f64);

impl Run<'_> {
    /// Add every replica that serves unmet demand on free GPUs (see the module comment).
    pub(super) fn fill_idle(&mut self, mut decision: Decision) -> Decision {
        let s = self.snapshot;
        let mut free: Vec<i64> = s.accelerators.iter().map(|a| i64::from(a.gpus)).collect();
        for (v, variant) in s.variants.iter().enumerate() {
            free[variant.accelerator] -= i64::from(decision.replicas[v]) * i64::from(variant.gpus_per_replica);
        }
        self.idle.checked = true;
        while let Some((v, d, gain)) = self.best_idle_replica(&decision, &free) {
            let variant = &s.variants[v];
            decision.replicas[v] += 1;
            free[variant.accelerator] -= i64::from(variant.gpus_per_replica);
            match decision.traffic[v].iter_mut().find(|(k, _)| *k == d.1) {
                Some((_, x)) => *x += gain,
                None => decision.traffic[v].push((d.1, gain)),
            }
            self.idle.replicas_added += 1;
            self.idle.served_added_rps += gain;
        }
        decision
    }

    /// The replica that serves the most unmet demand per GPU in the most important tier:
    /// (variant, demand, req/s it adds).
    fn best_idle_replica(&self, decision: &Decision, free: &[i64]) -> Option<IdleReplica> {
        let s = self.snapshot;
        let served = served_rps(self, decision);
        // ((priority, req/s per GPU), the replica)
        let mut best: Option<((u32, f64), IdleReplica)> = None;
        for &d in self.servable {
            let demand = &s.models[d.0].demands[d.1];
            let unmet = demand.arrival_rps - served.get(&d).copied().unwrap_or(0.0);
            if unmet <= UNMET_SHARE * demand.arrival_rps {
                continue;
            }
            let priority = s.classes[demand.class].priority;
            for (v, variant) in s.variants.iter().enumerate() {
                // Disaggregated variants need a replica on each side: not a single-replica fix.
                let fits = variant.model == d.0
                    && variant.role == Role::Both
                    && decision.replicas[v] < variant.max_replicas
                    && free[variant.accelerator] >= i64::from(variant.gpus_per_replica);
                if !fits {
                    continue;
                }
                let gain = self.added_capacity(v, d, decision).min(unmet);
                if gain <= TRAFFIC_EPSILON_RPS.max(UNMET_SHARE * demand.arrival_rps) {
                    continue;
                }
                let key = (priority, gain / f64::from(variant.gpus_per_replica));
                let better = match &best {
                    None => true,
                    Some((b, _)) => key.0 < b.0 || (key.0 == b.0 && key.1 > b.1),
                };
                if better {
                    best = Some((key, (v, d, gain)));
                }
            }
        }
        best.map(|(_, found)| found)
    }

    /// How much more of demand `d` variant `v` can carry with one more replica, keeping every
    /// capacity row of the classes it carries (and of `d`): min over rows j of the row's slack
    /// times κ_{v,d,j}. A class on v that may not share a replica with `d` blocks it.
    fn added_capacity(&self, v: usize, d: DemandId, decision: &Decision) -> f64 {
        let cap = &self.caps[v];
        if cap.per_demand[d.1].rps <= 0.0 {
            return 0.0;
        }
        let carried: Vec<(usize, f64)> =
            decision.traffic[v].iter().copied().filter(|&(_, x)| x > TRAFFIC_EPSILON_RPS).collect();
        if carried.iter().any(|&(k, _)| !can_share(cap, k, d.1)) {
            return 0.0;
        }
        let n = f64::from(decision.replicas[v]) + 1.0;
        let mut rows: Vec<usize> = carried.iter().map(|&(k, _)| k).collect();
        if !rows.contains(&d.1) {
            rows.push(d.1);
        }
        rows.iter()
            .map(|&j| {
                let used: f64 = carried.iter().map(|&(k, x)| x / cap.cross_rps[k][j]).sum();
                (n - used).max(0.0) * cap.cross_rps[d.1][j]
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// Served req/s per demand: `both` variants plus the decode side of disaggregated ones.
fn served_rps(run: &Run<'_>, decision: &Decision) -> std::collections::BTreeMap<DemandId, f64> {
    let mut served = std::collections::BTreeMap::new();
    for (v, variant) in run.snapshot.variants.iter().enumerate() {
        if variant.role == Role::Prefill {
            continue;
        }
        for &(k, x) in &decision.traffic[v] {
            *served.entry((variant.model, k)).or_default() += x;
        }
    }
    served
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::{Decision, PlanOptions, Run};
    use crate::analyze::fleet;
    use crate::optimize::milp;
    use crate::scenario;

    /// One model short of GPUs: 10 req/s, 1 req/s per replica, `gpus` GPUs.
    fn short(gpus: u32, max_replicas: u32) -> scenario::Snapshot {
        scenario::load(&format!(
            r#"
accelerators: [{{ name: G, gpus: {gpus}, cost_usd_per_gpu_hour: 1.0 }}]
service_classes: [{{ name: c, priority: 1, targets: [{{ model: m, itl: {{ ms: 50 }} }}] }}]
load: [{{ model: m, class: c, arrival_rate_rps: 10, input_tokens: 10, output_tokens: 10 }}]
variants:
  - {{ name: m-g, model: m, accelerator: G, gpus_per_replica: 1, max_batch: 8, max_replicas: {max_replicas}, capacity_rps: {{ c: 1 }} }}
"#
        ))
        .expect("valid test scenario")
    }

    fn filled(snapshot: &scenario::Snapshot, replicas: u32) -> (Decision, crate::plan::IdleCheck) {
        let caps = fleet::capacities(snapshot);
        let servable = milp::servable_demands(snapshot, &caps);
        let options = PlanOptions::default();
        let mut run = Run::new(snapshot, &caps, &servable, &options, Instant::now());
        let start = Decision {
            replicas: vec![replicas],
            traffic: vec![vec![(0, f64::from(replicas))]],
            mip_gap: 0.0,
            objective: 0.0,
        };
        let decision = run.fill_idle(start);
        (decision, run.idle.clone())
    }

    #[test]
    fn free_gpus_next_to_unmet_demand_get_replicas_with_its_traffic() {
        let (decision, idle) = filled(&short(4, 100), 1);
        assert_eq!(decision.replicas, vec![4]);
        assert!((decision.traffic[0][0].1 - 4.0).abs() < 1e-9, "{:?}", decision.traffic);
        assert!(idle.checked);
        assert_eq!(idle.replicas_added, 3);
        assert!((idle.served_added_rps - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_variant_at_its_maximum_or_a_full_inventory_gets_nothing() {
        let (decision, idle) = filled(&short(4, 2), 2);
        assert_eq!(decision.replicas, vec![2]);
        assert_eq!(idle.replicas_added, 0);
        let (decision, idle) = filled(&short(3, 100), 3);
        assert_eq!(decision.replicas, vec![3]);
        assert_eq!((idle.checked, idle.replicas_added), (true, 0));
    }
}
