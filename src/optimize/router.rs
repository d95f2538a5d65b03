//! Plans that a least-loaded router can follow.
//!
//! The MILP routes each class's traffic to a model's variants at rates it chooses, but llm-d's
//! endpoint picker (and `allot simulate`) sends each request to the replica with the fewest
//! requests per batch slot, whatever the class. That balances occupancy: a class-blind share
//! of the model's traffic in proportion to n_v·μ_v (μ_v one replica's saturation rate for the
//! model's class mix), so every replica runs at about the same utilization. Where a plan mixes
//! a fast and a slow variant, the MILP fills both to their capacity at the SLO and the router
//! then overloads the one whose capacity is the smaller share of its saturation (measured on
//! the conversation trace: docs/evaluation.md).
//!
//! Under the router's split, variant v keeps every capacity row Σ_k x_{v,k}/κ_{v,k,j} ≤ n_v
//! exactly when the pool's throughput P = Σ_w n_w·μ_w reaches
//!
//! ```text
//! R_v = μ_v · max_j Σ_k Λ_k / κ_{v,k,j}          (Λ_k the model's traffic of class k)
//! ```
//!
//! so a replica vector is router-consistent when P ≥ R_v for every variant it uses. The
//! cheapest one uses, for some threshold R, only variants with R_v ≤ R and has P ≥ R: one
//! small covering knapsack per threshold, solved exactly ([`review`]). With
//! `optimizer.routing: weighted` the router follows the plan's rates and none of this applies.

use super::Routing;
use super::milp::can_share;
use crate::analyze::Role;
use crate::analyze::fleet::{self, VariantCapacity};
use crate::scenario::Snapshot;
use crate::scenario::format::RoutingSpec;

/// A variant is reported when the router's share loads it this much past its capacity rows
/// (and past what the plan routes to it).
const OVERLOAD: f64 = 1.1;

/// A model's replicas are re-chosen when the router's share would load one of its variants
/// past its capacity rows by more than this (capacities are estimates; a 1 % imbalance is not
/// worth a replica).
const REBALANCE: f64 = 1.02;

/// A re-chosen model may cost at most this multiple of the plan's replicas for it. Past it the
/// plan keeps its split and warns: where a slow variant's capacity at the SLO is a small share
/// of its saturation, a router-consistent pool must run every replica at that low utilization
/// (measured: 1.9× the cost at 28 req/s on H100 + A100), and a plan dearer at a lower load
/// than at a higher one, where no consistent choice fits, is not one a user can follow.
const REBALANCE_MAX_COST_RATIO: f64 = 1.5;

/// Branch-and-bound nodes per covering knapsack (a few variants per model: the search ends
/// far below this; the limit only bounds pathological inputs, deterministically).
const SEARCH_NODES: u32 = 200_000;

/// One model's `both` variants as a least-loaded router sees them.
struct Pool {
    /// Variant indices: the model's `both` variants with a profile.
    variants: Vec<usize>,
    /// μ_v, req/s: one replica's saturation rate for the model's class mix.
    mu: Vec<f64>,
    /// R_v, req/s: the pool throughput at which the router's share keeps v within its
    /// capacity rows (infinite where a class it would get cannot meet its SLO there).
    need: Vec<f64>,
}

/// Λ_k: the traffic of each of model m's classes that its `both` variants carry.
fn class_load(snapshot: &Snapshot, traffic: &Routing, m: usize) -> Vec<f64> {
    let mut load = vec![0.0; snapshot.models[m].demands.len()];
    for (v, variant) in snapshot.variants.iter().enumerate() {
        if variant.model == m && variant.role == Role::Both {
            for &(k, x) in &traffic[v] {
                load[k] += x;
            }
        }
    }
    load
}

/// The router's view of model m carrying `load`; None when a variant in use has no profile
/// (its μ is unknown, so the model is not checked).
fn pool(snapshot: &Snapshot, caps: &[VariantCapacity], replicas: &[u32], m: usize, load: &[f64]) -> Option<Pool> {
    let model = &snapshot.models[m];
    let classes: Vec<usize> = (0..load.len()).filter(|&k| load[k] > 0.0).collect();
    let total: f64 = classes.iter().map(|&k| load[k]).sum();
    let mut out = Pool { variants: Vec::new(), mu: Vec::new(), need: Vec::new() };
    for (v, variant) in snapshot.variants.iter().enumerate() {
        if variant.model != m || variant.role != Role::Both {
            continue;
        }
        // 1/μ_mix = Σ_k w_k/μ_k: the class-blind router gives v requests in the model's mix,
        // and each holds a slot for B/μ_k.
        let inverse: Option<f64> = classes
            .iter()
            .map(|&k| {
                let mu = fleet::replica_model(variant, &model.demands[k])?.saturation_rps();
                (mu.is_finite() && mu > 0.0).then_some(load[k] / total / mu)
            })
            .sum();
        let Some(inverse) = inverse.filter(|x| *x > 0.0) else {
            if replicas[v] > 0 {
                return None;
            }
            continue;
        };
        let mu = 1.0 / inverse;
        let cap = &caps[v];
        let need = classes
            .iter()
            .map(|&j| {
                classes
                    .iter()
                    .map(|&k| {
                        let kappa = cap.cross_rps[k][j];
                        if kappa > 0.0 && can_share(cap, k, j) { load[k] / kappa } else { f64::INFINITY }
                    })
                    .sum::<f64>()
            })
            .fold(0.0, f64::max);
        out.variants.push(v);
        out.mu.push(mu);
        out.need.push(mu * need);
    }
    Some(out)
}

/// Per variant of the pool in use: R_v / P, the router's load on it as a share of its capacity
/// rows (> 1: past its capacity at the SLO).
fn router_loads(pool: &Pool, replicas: &[u32]) -> Vec<(usize, f64)> {
    let throughput: f64 = pool.variants.iter().zip(&pool.mu).map(|(&v, mu)| f64::from(replicas[v]) * mu).sum();
    pool.variants
        .iter()
        .zip(&pool.need)
        .filter(|(v, _)| replicas[**v] > 0)
        .map(|(&v, need)| (v, need / throughput))
        .collect()
}

/// Models of more than one `both` variant in use, whose split a least-loaded router decides.
fn mixed_models(snapshot: &Snapshot, replicas: &[u32]) -> Vec<usize> {
    (0..snapshot.models.len())
        .filter(|&m| {
            snapshot
                .variants
                .iter()
                .enumerate()
                .filter(|(v, x)| x.model == m && x.role == Role::Both && replicas[*v] > 0)
                .count()
                >= 2
        })
        .collect()
}

/// max_j Σ_k x_k / κ_{k,j}: the variant's tightest capacity row under the plan's own rates.
fn planned_load(cap: &VariantCapacity, traffic: &[(usize, f64)]) -> f64 {
    (0..cap.per_demand.len())
        .filter(|&j| traffic.iter().any(|&(k, x)| k == j && x > 0.0))
        .map(|j| {
            traffic
                .iter()
                .map(|&(k, x)| if cap.cross_rps[k][j] > 0.0 { x / cap.cross_rps[k][j] } else { 0.0 })
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
}

/// A model whose replicas were re-chosen for the router, or would have been but for the cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Rebalanced {
    pub model: usize,
    /// Hourly cost of the model's `both` replicas in the plan's own split.
    pub planned_cost_usd_per_hour: f64,
    /// Hourly cost of the cheapest router-consistent replicas.
    pub consistent_cost_usd_per_hour: f64,
    /// Whether the plan took them (within [`REBALANCE_MAX_COST_RATIO`]).
    pub applied: bool,
}

impl Rebalanced {
    pub fn extra_cost_usd_per_hour(&self) -> f64 {
        if self.applied { self.consistent_cost_usd_per_hour - self.planned_cost_usd_per_hour } else { 0.0 }
    }

    /// What the plan says about a re-choice it did not take.
    pub fn declined_warning(&self, snapshot: &Snapshot) -> Option<String> {
        (!self.applied).then(|| {
            format!(
                "model {}: replicas that a least-loaded router keeps within every SLO cost {:.2} $/h against this plan's {:.2} $/h ({:.1}×, past the {REBALANCE_MAX_COST_RATIO}× limit); the plan keeps its own split",
                snapshot.models[self.model].name,
                self.consistent_cost_usd_per_hour,
                self.planned_cost_usd_per_hour,
                self.consistent_cost_usd_per_hour / self.planned_cost_usd_per_hour
            )
        })
    }
}

/// What the router check did to a plan and what it says about it.
#[derive(Debug, Default)]
pub struct RouterReview {
    pub rebalanced: Vec<Rebalanced>,
    pub warnings: Vec<String>,
}

/// Check every model whose plan uses two or more `both` variants against a least-loaded
/// router. With `rechoose`, a model whose variants the router would overload gets the cheapest
/// router-consistent replicas that fit the GPUs the other models leave (its class traffic
/// unchanged), routed as the router does, unless they cost more than
/// [`REBALANCE_MAX_COST_RATIO`] times its plan. What is left overloaded (GPUs short, too dear,
/// or not re-chosen) is warned about, per variant past [`OVERLOAD`].
pub fn review(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    replicas: &mut [u32],
    traffic: &mut Routing,
    rechoose: bool,
) -> RouterReview {
    let mut review = RouterReview::default();
    if snapshot.settings.routing != RoutingSpec::LeastLoaded {
        return review;
    }
    for m in mixed_models(snapshot, replicas) {
        let load = class_load(snapshot, traffic, m);
        let Some(pool) = pool(snapshot, caps, replicas, m, &load) else { continue };
        if rechoose
            && router_loads(&pool, replicas).iter().any(|&(_, r)| r > REBALANCE)
            && let Some(rebalanced) = rechoose_model(snapshot, &pool, &load, m, replicas, traffic)
        {
            review.warnings.extend(rebalanced.declined_warning(snapshot));
            review.rebalanced.push(rebalanced);
        }
        review.warnings.extend(overload_warnings(snapshot, caps, &pool, m, replicas, traffic));
    }
    review
}

/// Re-choose model m's replicas (see [`review`]); None when no consistent choice fits.
fn rechoose_model(
    snapshot: &Snapshot,
    pool: &Pool,
    load: &[f64],
    m: usize,
    replicas: &mut [u32],
    traffic: &mut Routing,
) -> Option<Rebalanced> {
    let chosen = cheapest_consistent(snapshot, pool, replicas, m)?;
    let cost = |v: usize, n: u32| f64::from(n) * snapshot.variants[v].replica_cost_usd_per_hour(&snapshot.accelerators);
    let before: f64 = pool.variants.iter().map(|&v| cost(v, replicas[v])).sum();
    let after: f64 = pool.variants.iter().zip(&chosen).map(|(&v, &n)| cost(v, n)).sum();
    let applied = after <= REBALANCE_MAX_COST_RATIO * before;
    if applied {
        let throughput: f64 = chosen.iter().zip(&pool.mu).map(|(&n, mu)| f64::from(n) * mu).sum();
        for (i, &v) in pool.variants.iter().enumerate() {
            replicas[v] = chosen[i];
            let share = f64::from(chosen[i]) * pool.mu[i] / throughput;
            traffic[v] =
                (0..load.len()).filter(|&k| load[k] > 0.0 && share > 0.0).map(|k| (k, load[k] * share)).collect();
        }
    }
    Some(Rebalanced { model: m, planned_cost_usd_per_hour: before, consistent_cost_usd_per_hour: after, applied })
}

/// The warnings for model m's variants that the router loads past [`OVERLOAD`] of their
/// capacity rows (and past 1.1× what the plan routes to them).
fn overload_warnings(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    pool: &Pool,
    m: usize,
    replicas: &[u32],
    traffic: &Routing,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for (v, router) in router_loads(pool, replicas) {
        let planned = planned_load(&caps[v], &traffic[v]) / f64::from(replicas[v]);
        if router > OVERLOAD && router > planned * OVERLOAD {
            let share = if router.is_finite() {
                format!("{:.0} % of its capacity at the SLO", 100.0 * router)
            } else {
                "requests of a class it cannot serve within its SLO".to_string()
            };
            warnings.push(format!(
                "model {}: a least-loaded router (llm-d's endpoint picker) balances occupancy, not this plan's rates, and would give variant {} about {share} (the plan routes it {:.0} %); replicas that such a router keeps within every SLO do not fit the free GPUs or cost more than {REBALANCE_MAX_COST_RATIO}× these (optimizer.routing: weighted, with a router that follows the plan's rates, keeps this plan)",
                snapshot.models[m].name,
                snapshot.variants[v].name,
                100.0 * planned
            ));
        }
    }
    warnings
}

/// The cheapest router-consistent replicas of the pool (one count per pool variant), within
/// the variants' bounds, the model's minimum and the GPUs the other variants leave.
fn cheapest_consistent(snapshot: &Snapshot, pool: &Pool, replicas: &[u32], m: usize) -> Option<Vec<u32>> {
    let mut free: Vec<i64> = snapshot.accelerators.iter().map(|a| i64::from(a.gpus)).collect();
    for (v, variant) in snapshot.variants.iter().enumerate() {
        if !pool.variants.contains(&v) {
            free[variant.accelerator] -= i64::from(replicas[v]) * i64::from(variant.gpus_per_replica);
        }
    }
    let mut thresholds: Vec<f64> = pool.need.iter().copied().filter(|r| r.is_finite()).collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let mut best: Option<(f64, Vec<u32>)> = None;
    for threshold in thresholds {
        let allowed: Vec<bool> = pool.need.iter().map(|&r| r <= threshold).collect();
        // A variant held at a minimum is in use, so it must be allowed.
        if pool.variants.iter().zip(&allowed).any(|(&v, ok)| !ok && snapshot.variants[v].min_replicas > 0) {
            continue;
        }
        let items: Vec<Item> = pool
            .variants
            .iter()
            .zip(&pool.mu)
            .zip(&allowed)
            .filter(|(_, ok)| **ok)
            .map(|((&v, &mu), _)| {
                let variant = &snapshot.variants[v];
                Item {
                    variant: v,
                    cost: variant.replica_cost_usd_per_hour(&snapshot.accelerators),
                    mu,
                    gpus: i64::from(variant.gpus_per_replica),
                    accelerator: variant.accelerator,
                    lo: variant.min_replicas,
                    hi: variant.max_replicas,
                }
            })
            .collect();
        let Some((cost, counts)) = cheapest_cover(&items, threshold, snapshot.models[m].min_replicas, &free) else {
            continue;
        };
        if best.as_ref().is_none_or(|(c, _)| cost < *c - 1e-9) {
            let mut chosen = vec![0; pool.variants.len()];
            for (item, n) in items.iter().zip(counts) {
                let i = pool.variants.iter().position(|&v| v == item.variant).expect("item of the pool");
                chosen[i] = n;
            }
            best = Some((cost, chosen));
        }
    }
    best.map(|(_, chosen)| chosen)
}

/// One variant in a covering knapsack.
struct Item {
    variant: usize,
    cost: f64,
    mu: f64,
    gpus: i64,
    accelerator: usize,
    lo: u32,
    hi: u32,
}

/// min Σ c_i n_i  s.t.  Σ μ_i n_i ≥ need, Σ n_i ≥ min_total, lo_i ≤ n_i ≤ hi_i, and the GPUs
/// of each accelerator type within `free`: exact depth-first branch and bound, items in order
/// of cost per req/s, bounded by the fractional relaxation. None when nothing fits.
fn cheapest_cover(items: &[Item], need: f64, min_total: u32, free: &[i64]) -> Option<(f64, Vec<u32>)> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| (items[a].cost / items[a].mu).total_cmp(&(items[b].cost / items[b].mu)).then(a.cmp(&b)));
    let mut free = free.to_vec();
    let mut counts: Vec<u32> = items.iter().map(|i| i.lo).collect();
    for item in items {
        free[item.accelerator] -= i64::from(item.lo) * item.gpus;
    }
    if free.iter().any(|&f| f < 0) || items.iter().any(|i| i.lo > i.hi) {
        return None;
    }
    let base_cost: f64 = items.iter().map(|i| f64::from(i.lo) * i.cost).sum();
    let base_mu: f64 = items.iter().map(|i| f64::from(i.lo) * i.mu).sum();
    let base_total: u32 = items.iter().map(|i| i.lo).sum();
    let mut search = Search { items, order, best: None, nodes: 0, tolerance: 1e-9 * need.max(1.0) };
    search.dive(0, need - base_mu, base_total, min_total, base_cost, &mut counts, &mut free);
    search.best
}

struct Search<'a> {
    items: &'a [Item],
    order: Vec<usize>,
    best: Option<(f64, Vec<u32>)>,
    nodes: u32,
    tolerance: f64,
}

impl Search<'_> {
    #[allow(clippy::too_many_arguments)]
    fn dive(
        &mut self,
        depth: usize,
        need: f64,
        total: u32,
        min_total: u32,
        cost: f64,
        counts: &mut [u32],
        free: &mut [i64],
    ) {
        self.nodes += 1;
        if need <= self.tolerance && total >= min_total {
            if self.best.as_ref().is_none_or(|(c, _)| cost < *c - 1e-9) {
                self.best = Some((cost, counts.to_vec()));
            }
            return;
        }
        if depth == self.order.len() || self.nodes > SEARCH_NODES {
            return;
        }
        // The rest of the cover at the best remaining cost per req/s bounds what this branch
        // can reach.
        let i = self.order[depth];
        let item = &self.items[i];
        let bound = cost + need.max(0.0) * item.cost / item.mu;
        if self.best.as_ref().is_some_and(|(c, _)| bound >= *c - 1e-9) {
            return;
        }
        let fits = if item.gpus > 0 { free[item.accelerator] / item.gpus } else { i64::from(item.hi) };
        let by_need = (need.max(0.0) / item.mu - 1e-9).ceil() as i64;
        let useful = by_need.max(i64::from(min_total.saturating_sub(total)));
        let most = i64::from(item.hi - counts[i]).min(fits).min(useful).max(0);
        for extra in (0..=most).rev() {
            let n = extra as u32;
            counts[i] += n;
            free[item.accelerator] -= extra * item.gpus;
            let added = f64::from(n);
            self.dive(depth + 1, need - added * item.mu, total + n, min_total, cost + added * item.cost, counts, free);
            counts[i] -= n;
            free[item.accelerator] += extra * item.gpus;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(variant: usize, cost: f64, mu: f64, accelerator: usize, hi: u32) -> Item {
        Item { variant, cost, mu, gpus: 1, accelerator, lo: 0, hi }
    }

    /// Every count vector within the bounds, scored directly.
    fn brute(items: &[Item], need: f64, min_total: u32, free: &[i64]) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut counts = vec![0u32; items.len()];
        loop {
            let mut used = vec![0i64; free.len()];
            for (it, &n) in items.iter().zip(&counts) {
                used[it.accelerator] += i64::from(n) * it.gpus;
            }
            let mu: f64 = items.iter().zip(&counts).map(|(it, &n)| f64::from(n) * it.mu).sum();
            let total: u32 = counts.iter().sum();
            if mu >= need - 1e-9 && total >= min_total && used.iter().zip(free).all(|(u, f)| u <= f) {
                let cost: f64 = items.iter().zip(&counts).map(|(it, &n)| f64::from(n) * it.cost).sum();
                best = Some(best.map_or(cost, |b: f64| b.min(cost)));
            }
            let mut i = 0;
            loop {
                if i == items.len() {
                    return best;
                }
                if counts[i] < items[i].hi {
                    counts[i] += 1;
                    break;
                }
                counts[i] = 0;
                i += 1;
            }
        }
    }

    #[test]
    fn the_covering_knapsack_is_exact_against_enumeration() {
        // Deterministic pseudo-random instances (a linear congruential generator).
        let mut state: u64 = 12345;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as f64 / f64::from(1u32 << 31)
        };
        for _ in 0..300 {
            let n = 1 + (next() * 4.0) as usize;
            let items: Vec<Item> = (0..n)
                .map(|v| {
                    item(
                        v,
                        1.0 + (next() * 8.0).floor(),
                        0.5 + next() * 4.0,
                        (next() * 2.0) as usize,
                        (next() * 5.0) as u32,
                    )
                })
                .collect();
            let free = [(next() * 12.0) as i64, (next() * 12.0) as i64];
            let need = next() * 15.0;
            let min_total = (next() * 3.0) as u32;
            let got = cheapest_cover(&items, need, min_total, &free).map(|(c, _)| c);
            let want = brute(&items, need, min_total, &free);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "got {g}, want {w}"),
                (g, w) => assert_eq!(g, w),
            }
        }
    }

    #[test]
    fn the_cover_respects_each_accelerator_types_free_gpus() {
        // The cheap item's type has 2 GPUs free: the rest comes from the dear one.
        let items = [item(0, 1.0, 1.0, 0, 10), item(1, 3.0, 1.0, 1, 10)];
        let (cost, counts) = cheapest_cover(&items, 4.0, 0, &[2, 10]).expect("fits");
        assert_eq!(counts, vec![2, 2]);
        assert!((cost - 8.0).abs() < 1e-12);
        assert!(cheapest_cover(&items, 4.0, 0, &[1, 2]).is_none());
    }
}
