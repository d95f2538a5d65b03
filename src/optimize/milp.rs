//! The mixed-integer program of DESIGN §4, written the way it reads on paper.
//!
//! ```text
//! variables  n_v ∈ ℤ, min_v ≤ n_v ≤ max_v       replicas of variant v
//!            x_{v,d} ≥ 0                          traffic of demand d (model, class) on v, req/s
//!            s_d ∈ [0,1]                          served fraction of demand d
//!            y_d ≥ 0                              share of d served disaggregated (P/D)
//!            δ⁺_v, δ⁻_v ≥ 0                       replicas added / removed
//! capacity   Σ_d x_{v,d} / κ_{v,d} ≤ n_v                       every variant
//! demand     Σ_{v∈both(m)} x_{v,d} + y_d = s_d·λ_d             every demand
//!            Σ_{v∈prefill(m)} x_{v,d} = y_d = Σ_{v∈decode(m)} x_{v,d}
//! inventory  Σ_{v on a} u_v·n_v ≤ C_a                          every accelerator type
//! P/D ratio  ρ_lo·Σ_decode n ≤ Σ_prefill n ≤ ρ_hi·Σ_decode n   disaggregated models
//! minimum    Σ_{v∈m} n_v ≥ min_m                               models with a minimum
//! change     n_v − n⁰_v = δ⁺_v − δ⁻_v
//! ```
//! The objective depends on the phase ([`Objective`]); floors fixed by earlier phases are extra
//! constraints on `s`.

use std::collections::BTreeMap;

use good_lp::{Expression, ProblemVariables, Variable, variable};

use crate::analyze::Role;
use crate::analyze::fleet::VariantCapacity;
use crate::scenario::Snapshot;

/// Index of a demand: (model index, position in `Model::demands`).
pub type DemandId = (usize, usize);

/// What one phase optimizes.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// Minimize cost plus transition cost (s fixed by `floors`).
    Cost,
    /// Maximize the weighted minimum served fraction t of these demands, plus a small reward
    /// for their total served traffic so spare GPUs are never left idle.
    FairShare { tier: Vec<DemandId> },
    /// Maximize the weighted minimum served fraction t of these demands alone (the definition
    /// of a tier's level; the independent-solver test solves it directly).
    Level { tier: Vec<DemandId> },
    /// Any point satisfying the floors (a probe of whether a level is reachable).
    Feasibility,
    /// Maximize the total served traffic of these demands (req/s).
    Served { tier: Vec<DemandId> },
}

/// Served-fraction floors fixed by earlier phases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Floors {
    /// Every servable demand fully served (s_d = 1): the first phase.
    pub serve_all: bool,
    /// s_d ≥ value.
    pub served_fraction: BTreeMap<DemandId, f64>,
    /// Σ_{d∈group} λ_d·s_d ≥ value (req/s), one per fair-share tier already solved.
    pub served_rps: Vec<(Vec<DemandId>, f64)>,
    /// n_v fixed to these replicas (one per variant): routing only, an LP.
    pub fixed_replicas: Option<Vec<u32>>,
}

/// The weight of the total-served reward next to the max-min term; small enough that the
/// minimum fraction dominates (it can cost at most this much of t).
const SERVED_REWARD: f64 = 1e-3;

/// κ_{v,k,j} below this share of κ_{v,j,j} counts as none: class k's requests cannot meet class
/// j's SLO on v, so the two never share v's replicas (a binary choice, below). Routing a sliver
/// at a floor capacity instead multiplied replicas (one strict and one long-prompt class turned
/// 5 replicas into 430), and coefficients this small are noise to HiGHS anyway.
const MIN_CROSS_SHARE: f64 = 1e-6;

/// Whether classes k and j may share a replica of a variant (each meets the other's SLO).
pub fn can_share(cap: &VariantCapacity, k: usize, j: usize) -> bool {
    let ok = |a: usize, b: usize| cap.cross_rps[a][b] > MIN_CROSS_SHARE * cap.per_demand[b].rps;
    k == j || (ok(k, j) && ok(j, k))
}

/// Worth of a fully served demand in the cost phase, USD/h: far below any replica's cost.
const COST_PHASE_SERVED_REWARD_USD: f64 = 1e-4;

/// The built model, ready for one solve.
pub struct Milp {
    pub vars: ProblemVariables,
    pub constraints: Vec<good_lp::Constraint>,
    pub objective: Expression,
    pub maximize: bool,
    pub handles: Handles,
}

/// Where each quantity of interest lives among the model's variables.
#[derive(Clone, Debug)]
pub struct Handles {
    /// n_v, by variant index.
    pub replicas: Vec<Variable>,
    /// x_{v,d} by variant index, for the demands of its model that it can serve.
    pub traffic: Vec<Vec<(usize, Variable)>>,
    /// s_d.
    pub served: BTreeMap<DemandId, Variable>,
    /// y_d, for disaggregated models.
    pub pd_share: BTreeMap<DemandId, Variable>,
    /// (δ⁺_v, δ⁻_v) by variant index.
    pub changes: Vec<(Variable, Variable)>,
    /// z_{v,k} ∈ {0,1}: variant v carries class k, for classes that cannot share v with another
    /// class it can carry (by variant index; empty for most).
    pub carries: Vec<Vec<(usize, Variable)>>,
    /// The fair-share level t.
    pub t: Variable,
    /// Every variable in creation order (= HiGHS column order).
    pub columns: Vec<Variable>,
}

struct Builder {
    vars: ProblemVariables,
    columns: Vec<Variable>,
}

impl Builder {
    fn add(&mut self, def: good_lp::VariableDefinition) -> Variable {
        let v = self.vars.add(def);
        self.columns.push(v);
        v
    }
}

/// Class weights of a tier's demands, scaled so the largest is 1: s_d ≥ weight_d·t.
pub fn tier_weights(snapshot: &Snapshot, tier: &[DemandId]) -> Vec<f64> {
    let weight = |d: &DemandId| snapshot.classes[snapshot.models[d.0].demands[d.1].class].weight;
    let max = tier.iter().map(weight).fold(0.0, f64::max);
    tier.iter().map(|d| weight(d) / max).collect()
}

/// Hourly cost of one replica of each variant.
pub fn replica_costs(snapshot: &Snapshot) -> Vec<f64> {
    snapshot.variants.iter().map(|v| v.replica_cost_usd_per_hour(&snapshot.accelerators)).collect()
}

/// Each variant's objective coefficients in the cost phase: $/h per replica (with the
/// accelerator-move charge where the model does not run on that type now) and $/h per replica
/// added or removed.
pub fn cost_coefficients(snapshot: &Snapshot) -> Vec<(f64, f64)> {
    let costs = replica_costs(snapshot);
    let transition = snapshot.settings.transition;
    let on_type_now = current_types(snapshot);
    snapshot
        .variants
        .iter()
        .zip(costs)
        .map(|(variant, c)| {
            let move_charge = if on_type_now[variant.model][variant.accelerator] {
                0.0
            } else {
                transition.accelerator_move_fraction * c
            };
            (c + move_charge, transition.replica_change_fraction * c)
        })
        .collect()
}

/// The serve-all cost objective (`Objective::Cost` with `floors.serve_all`) at a replica vector:
/// what the MILP would report for that point.
pub fn serve_all_cost(snapshot: &Snapshot, replicas: &[u32]) -> f64 {
    cost_coefficients(snapshot)
        .iter()
        .zip(replicas)
        .zip(&snapshot.variants)
        .map(|((&(per_replica, per_change), &n), v)| {
            f64::from(n) * per_replica + f64::from(n.abs_diff(v.current_replicas)) * per_change
        })
        .sum()
}

/// Demands with positive load that at least one variant can serve, in order.
pub fn servable_demands(snapshot: &Snapshot, caps: &[VariantCapacity]) -> Vec<DemandId> {
    let mut out = Vec::new();
    for (m, model) in snapshot.models.iter().enumerate() {
        for (k, d) in model.demands.iter().enumerate() {
            if d.arrival_rps <= 0.0 {
                continue;
            }
            if servable(snapshot, caps, m, k) {
                out.push((m, k));
            }
        }
    }
    out
}

/// Whether some way to serve demand (m, k) has positive capacity: a `both` variant, or at least
/// one prefill and one decode variant.
fn servable(snapshot: &Snapshot, caps: &[VariantCapacity], m: usize, k: usize) -> bool {
    let mut has = BTreeMap::new();
    for (v, variant) in snapshot.variants.iter().enumerate() {
        if variant.model == m && variant.max_replicas > 0 && caps[v].per_demand[k].rps > 0.0 {
            has.insert(variant.role, true);
        }
    }
    has.contains_key(&Role::Both) || (has.contains_key(&Role::Prefill) && has.contains_key(&Role::Decode))
}

/// Accelerator types each model runs on now (for the move penalty).
pub fn current_types(snapshot: &Snapshot) -> Vec<Vec<bool>> {
    let mut on = vec![vec![false; snapshot.accelerators.len()]; snapshot.models.len()];
    for v in &snapshot.variants {
        if v.current_replicas > 0 {
            on[v.model][v.accelerator] = true;
        }
    }
    on
}

/// Build the model for one phase.
pub fn build(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    servable: &[DemandId],
    objective: &Objective,
    floors: &Floors,
) -> Milp {
    build_with(snapshot, caps, servable, objective, floors, true)
}

/// The same model with integrality relaxed (n_v continuous): its LP relaxation.
pub fn build_relaxation(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    servable: &[DemandId],
    objective: &Objective,
    floors: &Floors,
) -> Milp {
    build_with(snapshot, caps, servable, objective, floors, false)
}

fn build_with(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    servable: &[DemandId],
    objective: &Objective,
    floors: &Floors,
    integer: bool,
) -> Milp {
    let mut b = Builder { vars: ProblemVariables::new(), columns: Vec::new() };
    let mut constraints = Vec::new();

    // n_v
    let replicas: Vec<Variable> = snapshot
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let n = match &floors.fixed_replicas {
                Some(fixed) => variable().min(f64::from(fixed[i])).max(f64::from(fixed[i])),
                None => variable().min(f64::from(v.min_replicas)).max(f64::from(v.max_replicas)),
            };
            b.add(if integer && floors.fixed_replicas.is_none() { n.integer() } else { n })
        })
        .collect();

    // s_d, and y_d for disaggregated models
    let is_servable: std::collections::BTreeSet<DemandId> = servable.iter().copied().collect();
    let mut served = BTreeMap::new();
    for &(m, k) in servable {
        let floor = floors.served_fraction.get(&(m, k)).copied().unwrap_or(0.0).clamp(0.0, 1.0);
        let s =
            if floors.serve_all { b.add(variable().min(1.0).max(1.0)) } else { b.add(variable().min(floor).max(1.0)) };
        served.insert((m, k), s);
    }
    let disaggregated: Vec<bool> = (0..snapshot.models.len())
        .map(|m| snapshot.variants.iter().any(|v| v.model == m && v.role != Role::Both))
        .collect();
    let mut pd_share = BTreeMap::new();
    for &(m, k) in servable {
        if disaggregated[m] {
            pd_share.insert((m, k), b.add(variable().min(0.0)));
        }
    }

    // x_{v,d}, and the capacity rows of each variant: one per class it may carry, because the
    // classes share the replica's queue and each class's SLO must hold at the total load
    let mut traffic = Vec::with_capacity(snapshot.variants.len());
    let mut carries = Vec::with_capacity(snapshot.variants.len());
    for (v, variant) in snapshot.variants.iter().enumerate() {
        let xs: Vec<(usize, Variable)> = caps[v]
            .per_demand
            .iter()
            .enumerate()
            .filter(|(k, cap)| cap.rps > 0.0 && is_servable.contains(&(variant.model, *k)))
            .map(|(k, _)| (k, b.add(variable().min(0.0))))
            .collect();
        // Row j charges the classes that may share a replica with j; a class that may not is
        // kept off v whenever j is on it (z_k + z_j ≤ 1, x ≤ λ·z).
        let mut z: Vec<(usize, Variable)> = Vec::new();
        for &(j, _) in &xs {
            let row: Expression = xs
                .iter()
                .filter(|&&(k, _)| can_share(&caps[v], k, j))
                .map(|&(k, x)| x * (1.0 / caps[v].cross_rps[k][j]))
                .sum();
            constraints.push(row.leq(replicas[v]));
            for &(k, _) in &xs {
                if k < j && !can_share(&caps[v], k, j) {
                    for class in [k, j] {
                        if !z.iter().any(|(c, _)| *c == class) {
                            let var = b.add(if integer { variable().binary() } else { variable().min(0.0).max(1.0) });
                            z.push((class, var));
                        }
                    }
                    let zk = z.iter().find(|(c, _)| *c == k).map(|p| p.1).expect("added above");
                    let zj = z.iter().find(|(c, _)| *c == j).map(|p| p.1).expect("added above");
                    constraints.push((zk + zj).leq(1.0));
                }
            }
        }
        for &(class, var) in &z {
            let x = xs.iter().find(|(k, _)| *k == class).map(|p| p.1).expect("a column of v");
            let lambda = snapshot.models[variant.model].demands[class].arrival_rps;
            constraints.push(Expression::from(x).leq(var * lambda));
        }
        traffic.push(xs);
        carries.push(z);
    }

    // demand rows: both-variants plus the disaggregated share meet s·λ
    for &(m, k) in servable {
        let lambda = snapshot.models[m].demands[k].arrival_rps;
        let mut sum_both: Expression = 0.into();
        let mut sum_prefill: Expression = 0.into();
        let mut sum_decode: Expression = 0.into();
        for (v, variant) in snapshot.variants.iter().enumerate() {
            if variant.model != m {
                continue;
            }
            for &(kk, x) in &traffic[v] {
                if kk == k {
                    match variant.role {
                        Role::Both => sum_both += x,
                        Role::Prefill => sum_prefill += x,
                        Role::Decode => sum_decode += x,
                    }
                }
            }
        }
        let s = served[&(m, k)];
        match pd_share.get(&(m, k)) {
            Some(&y) => {
                constraints.push((sum_both + y).eq(s * lambda));
                constraints.push(sum_prefill.eq(y));
                constraints.push(sum_decode.eq(y));
            }
            None => constraints.push(sum_both.eq(s * lambda)),
        }
    }

    // Valid cut: a demand with a positive floor needs at least one whole replica of each role it
    // passes through (the LP relaxation would otherwise cover it with a sliver of one). Under
    // serve_all it also stops a tiny load (1e-6 of a replica) from riding on a replica count
    // that HiGHS's integrality tolerance lets be 1e-6 and that rounds to 0.
    let floored: Vec<DemandId> = if floors.serve_all {
        servable.to_vec()
    } else {
        floors.served_fraction.iter().filter(|&(_, &f)| f > 0.0).map(|(&d, _)| d).collect()
    };
    for d in floored {
        if served.contains_key(&d) && floors.fixed_replicas.is_none() {
            for cut in whole_replica_cuts(snapshot, &replicas, &traffic, d) {
                constraints.push(cut.geq(1.0));
            }
        }
    }

    // Valid cut: with fixed floors, each ordinary model's replicas must carry at least its
    // floored traffic, Σ_v ĉ_v·n_v ≥ Σ_k f_k·λ_k, where ĉ_v bounds the total req/s one replica
    // of v can carry (from its tightest capacity row). It is implied by the routing rows, but
    // as one explicit covering knapsack per model it gets HiGHS's rounding cuts (a model
    // needing 2.3 replicas' worth needs 3), which is what decides a fixed-level probe.
    if floors.fixed_replicas.is_none() {
        for (m, model) in snapshot.models.iter().enumerate() {
            if disaggregated[m] {
                continue;
            }
            let required: f64 = (0..model.demands.len())
                .filter(|&k| served.contains_key(&(m, k)))
                .map(|k| {
                    let f = if floors.serve_all {
                        1.0
                    } else {
                        floors.served_fraction.get(&(m, k)).copied().unwrap_or(0.0)
                    };
                    f * model.demands[k].arrival_rps
                })
                .sum();
            if required <= 0.0 {
                continue;
            }
            let supply: Expression = snapshot
                .variants
                .iter()
                .enumerate()
                .filter(|(v, variant)| variant.model == m && !traffic[*v].is_empty())
                .map(|(v, _)| replicas[v] * replica_throughput_bound(&caps[v], &traffic[v]))
                .sum();
            constraints.push(supply.geq(required));
        }
    }

    // inventory per accelerator type
    for (a, acc) in snapshot.accelerators.iter().enumerate() {
        let used: Expression = snapshot
            .variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.accelerator == a)
            .map(|(v, variant)| replicas[v] * f64::from(variant.gpus_per_replica))
            .sum();
        constraints.push(used.leq(f64::from(acc.gpus)));
    }

    // model minimum: at least min_m replicas of model m over all its variants, wherever the plan
    // places them (WVA's minNumReplicas); variant minimums are bounds on n_v above
    for (m, model) in snapshot.models.iter().enumerate() {
        if model.min_replicas > 0 {
            let total: Expression = snapshot
                .variants
                .iter()
                .enumerate()
                .filter(|(_, v)| v.model == m)
                .map(|(v, _)| Expression::from(replicas[v]))
                .sum();
            constraints.push(total.geq(f64::from(model.min_replicas)));
        }
    }

    // P/D ratio per disaggregated model
    for (m, model) in snapshot.models.iter().enumerate() {
        let Some(ratio) = model.pd_ratio else { continue };
        let sum_role = |role: Role| -> Expression {
            snapshot.variants_in_role(m, role).map(|v| Expression::from(replicas[v])).sum()
        };
        let (prefill, decode) = (sum_role(Role::Prefill), sum_role(Role::Decode));
        constraints.push((decode.clone() * ratio.min).leq(prefill.clone()));
        constraints.push(prefill.leq(decode * ratio.max));
    }

    // floors on each solved tier's served traffic
    for (group, rps) in &floors.served_rps {
        let total: Expression = group.iter().map(|d| served[d] * snapshot.models[d.0].demands[d.1].arrival_rps).sum();
        constraints.push(total.geq(*rps));
    }

    // δ⁺_v, δ⁻_v: replicas added and removed (in every phase, so the columns stay the same
    // from phase to phase and one phase's solution can start the next)
    let changes: Vec<(Variable, Variable)> = snapshot
        .variants
        .iter()
        .enumerate()
        .map(|(v, variant)| {
            let (up, down) = (b.add(variable().min(0.0)), b.add(variable().min(0.0)));
            constraints.push((replicas[v] - f64::from(variant.current_replicas)).eq(up - down));
            (up, down)
        })
        .collect();

    // t: the weighted minimum served fraction of the tier being shared (0 outside fair share)
    let fair_share = matches!(objective, Objective::FairShare { .. } | Objective::Level { .. });
    let t = b.add(variable().min(0.0).max(if fair_share { 1.0 } else { 0.0 }));

    // objective
    let (objective, maximize) = match objective {
        Objective::Cost => {
            let mut cost: Expression = 0.into();
            for (v, &(per_replica, per_change)) in cost_coefficients(snapshot).iter().enumerate() {
                cost += replicas[v] * per_replica;
                let (up, down) = changes[v];
                cost += (up + down) * per_change;
            }
            if !floors.serve_all {
                // Tie-break: among equally cheap plans, serve as much as the replicas allow, so
                // the floors' tolerance is not mistaken for room to serve less.
                for s in served.values() {
                    cost -= *s * COST_PHASE_SERVED_REWARD_USD;
                }
            }
            (cost, false)
        }
        Objective::FairShare { tier } | Objective::Level { tier } => {
            let level_only = matches!(objective, Objective::Level { .. });
            let total_rps: f64 = tier.iter().map(|d| snapshot.models[d.0].demands[d.1].arrival_rps).sum();
            // Scaled so the served term's coefficients are O(1) (HiGHS's presolve mishandled a
            // 1e-4-scale objective: it proved a suboptimal start optimal); t's weight keeps its
            // lexicographic priority.
            let mut reward: Expression = if level_only { t.into() } else { t * (1.0 / SERVED_REWARD) };
            for (d, weight) in tier.iter().zip(tier_weights(snapshot, tier)) {
                constraints.push(Expression::from(served[d]).geq(t * weight));
                // Valid cut: serving any of d (t > 0) takes at least one whole replica of each
                // role it passes through, and t ≤ 1. It stops the LP relaxation from covering
                // every model with slivers of replicas, which made its bound useless.
                for roles in [&[Role::Both, Role::Decode][..], &[Role::Both, Role::Prefill][..]] {
                    let some_replica: Expression = snapshot
                        .variants
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.model == d.0 && roles.contains(&v.role))
                        .map(|(v, _)| Expression::from(replicas[v]))
                        .sum();
                    constraints.push(some_replica.geq(t * weight));
                }
                if !level_only {
                    let lambda = snapshot.models[d.0].demands[d.1].arrival_rps;
                    reward += served[d] * (lambda / total_rps);
                }
            }
            (reward, true)
        }
        Objective::Feasibility => (Expression::from(0.0), false),
        Objective::Served { tier } => {
            let total_rps: f64 = tier.iter().map(|d| snapshot.models[d.0].demands[d.1].arrival_rps).sum();
            let served_share: Expression =
                tier.iter().map(|d| served[d] * (snapshot.models[d.0].demands[d.1].arrival_rps / total_rps)).sum();
            (served_share, true)
        }
    };

    let handles = Handles { replicas, traffic, served, pd_share, changes, carries, t, columns: b.columns };
    Milp { vars: b.vars, constraints, objective, maximize, handles }
}

/// An upper bound on the req/s one replica of a variant carries, over any mix of the classes it
/// may carry: each capacity row j alone bounds the total by max_k κ_{k,j} over the classes it
/// charges; the tightest row counts when every class may share with every other, and without
/// that (a binary choice of classes) the sum of the classes' own capacities.
fn replica_throughput_bound(cap: &VariantCapacity, xs: &[(usize, Variable)]) -> f64 {
    let classes: Vec<usize> = xs.iter().map(|(k, _)| *k).collect();
    let all_share = classes.iter().all(|&k| classes.iter().all(|&j| can_share(cap, k, j)));
    if all_share {
        classes
            .iter()
            .map(|&j| classes.iter().map(|&k| cap.cross_rps[k][j]).fold(0.0, f64::max))
            .fold(f64::INFINITY, f64::min)
    } else {
        classes.iter().map(|&k| cap.per_demand[k].rps).sum()
    }
}

/// Σ n_v over the variants that can carry demand `d`, one sum per stage a request passes
/// (`both` or decode; `both` or prefill): serving any of `d` needs each sum ≥ 1.
fn whole_replica_cuts(
    snapshot: &Snapshot,
    replicas: &[Variable],
    traffic: &[Vec<(usize, Variable)>],
    d: DemandId,
) -> Vec<Expression> {
    [&[Role::Both, Role::Decode][..], &[Role::Both, Role::Prefill][..]]
        .iter()
        .map(|roles| {
            snapshot
                .variants
                .iter()
                .enumerate()
                .filter(|(v, variant)| {
                    variant.model == d.0 && roles.contains(&variant.role) && traffic[*v].iter().any(|(k, _)| *k == d.1)
                })
                .map(|(v, _)| Expression::from(replicas[v]))
                .sum()
        })
        .collect()
}

/// A feasible start for a phase that fixes no service floor: minimum replicas, nothing served.
/// (HiGHS ignores a start that violates some row, e.g. a P/D ratio, so this is always safe.)
pub fn minimal_point(snapshot: &Snapshot, handles: &Handles) -> Vec<f64> {
    let mut values: std::collections::HashMap<Variable, f64> = std::collections::HashMap::new();
    let mut minimum: Vec<u32> = snapshot.variants.iter().map(|v| v.min_replicas).collect();
    // A model minimum above its variants' goes on its cheapest variant with room.
    let costs = replica_costs(snapshot);
    for (m, model) in snapshot.models.iter().enumerate() {
        let have: u32 = snapshot.variants.iter().zip(&minimum).filter(|(v, _)| v.model == m).map(|(_, n)| n).sum();
        let cheapest = (0..snapshot.variants.len())
            .filter(|&v| snapshot.variants[v].model == m && snapshot.variants[v].max_replicas >= model.min_replicas)
            .min_by(|&a, &b| costs[a].total_cmp(&costs[b]));
        if let (Some(v), true) = (cheapest, model.min_replicas > have) {
            minimum[v] += model.min_replicas - have;
        }
    }
    for (v, variant) in snapshot.variants.iter().enumerate() {
        let n = f64::from(minimum[v]);
        let delta = n - f64::from(variant.current_replicas);
        let (up, down) = handles.changes[v];
        values.insert(handles.replicas[v], n);
        values.insert(up, delta.max(0.0));
        values.insert(down, (-delta).max(0.0));
    }
    handles.columns.iter().map(|c| values.get(c).copied().unwrap_or(0.0)).collect()
}

/// The point of a phase's columns for given replicas and routing (served fractions, P/D shares
/// and transition columns follow from them; t = 0).
pub fn point_from(snapshot: &Snapshot, handles: &Handles, replicas: &[u32], traffic: &[Vec<(usize, f64)>]) -> Vec<f64> {
    let mut values: std::collections::HashMap<Variable, f64> = std::collections::HashMap::new();
    let mut served: BTreeMap<DemandId, f64> = BTreeMap::new();
    let mut pd: BTreeMap<DemandId, f64> = BTreeMap::new();
    for (v, variant) in snapshot.variants.iter().enumerate() {
        let n = f64::from(replicas[v]);
        values.insert(handles.replicas[v], n);
        let delta = n - f64::from(variant.current_replicas);
        let (up, down) = handles.changes[v];
        values.insert(up, delta.max(0.0));
        values.insert(down, (-delta).max(0.0));
        for &(k, x) in &handles.traffic[v] {
            let rps = traffic[v].iter().find(|(kk, _)| *kk == k).map_or(0.0, |(_, rps)| *rps);
            values.insert(x, rps);
            match variant.role {
                Role::Both => *served.entry((variant.model, k)).or_default() += rps,
                Role::Prefill => *pd.entry((variant.model, k)).or_default() += rps,
                Role::Decode => {}
            }
        }
    }
    for (v, z) in handles.carries.iter().enumerate() {
        for &(k, var) in z {
            let carried = traffic[v].iter().any(|&(kk, rps)| kk == k && rps > 0.0);
            values.insert(var, if carried { 1.0 } else { 0.0 });
        }
    }
    for (d, &s) in &handles.served {
        let lambda = snapshot.models[d.0].demands[d.1].arrival_rps;
        let y = pd.get(d).copied().unwrap_or(0.0);
        values.insert(s, ((served.get(d).copied().unwrap_or(0.0) + y) / lambda).min(1.0));
        if let Some(&yv) = handles.pd_share.get(d) {
            values.insert(yv, y);
        }
    }
    handles.columns.iter().map(|c| values.get(c).copied().unwrap_or(0.0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::fleet;
    use crate::optimize::solver::{self, SolveOptions};

    #[test]
    fn serve_all_cost_is_the_cost_phase_objective_at_a_replica_vector() {
        // Transition charges on: a move onto B, a replica added on A and one removed on C.
        let snapshot = crate::scenario::load(
            r#"
accelerators:
  - { name: A, gpus: 8, cost_usd_per_gpu_hour: 1.0 }
  - { name: B, gpus: 8, cost_usd_per_gpu_hour: 1.2 }
  - { name: C, gpus: 8, cost_usd_per_gpu_hour: 3.0 }
service_classes: [{ name: c, priority: 1, targets: [{ model: m, ttft: { ms: 1000 } }] }]
load: [{ model: m, class: c, arrival_rate_rps: 25, input_tokens: 100, output_tokens: 100 }]
variants:
  - { name: on-a, model: m, accelerator: A, gpus_per_replica: 2, max_batch: 8, max_replicas: 1, current_replicas: 0, capacity_rps: { c: 10 } }
  - { name: on-b, model: m, accelerator: B, gpus_per_replica: 1, max_batch: 8, current_replicas: 0, capacity_rps: { c: 4 } }
  - { name: on-c, model: m, accelerator: C, gpus_per_replica: 1, max_batch: 8, current_replicas: 2, capacity_rps: { c: 6 } }
optimizer: { mip_gap: 0, transition: { replica_change_fraction: 0.1, accelerator_move_fraction: 0.3 } }
"#,
        )
        .expect("valid scenario");
        let caps = fleet::capacities(&snapshot);
        let servable = servable_demands(&snapshot, &caps);
        let floors = Floors { serve_all: true, ..Floors::default() };
        let model = build(&snapshot, &caps, &servable, &Objective::Cost, &floors);
        let options = SolveOptions { time_limit_s: 10.0, mip_gap: 0.0, node_limit: None, log: None, extra: Vec::new() };
        let (solved, handles) = solver::solve(model, options, None).expect("feasible");
        let replicas: Vec<u32> = handles.replicas.iter().map(|&n| solved.value(n).round() as u32).collect();
        assert!(replicas.iter().any(|&n| n > 0));
        let cost = serve_all_cost(&snapshot, &replicas);
        assert!((cost - solved.objective).abs() < 1e-6, "{cost} vs HiGHS {} at {replicas:?}", solved.objective);
        // The bound HiGHS proves for an optimal MILP is its objective.
        let bound = solved.dual_bound.expect("a MILP has a dual bound");
        assert!((bound - solved.objective).abs() <= 1e-6 * solved.objective.abs().max(1.0), "bound {bound}");
    }
}
