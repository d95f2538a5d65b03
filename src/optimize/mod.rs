//! Optimization: the lexicographic MILP of DESIGN §4, from a snapshot to a plan.
//!
//! Phases: (1) serve every demand at least cost; if GPUs are short, (2) per priority tier, most
//! important first, maximize the tier's weighted minimum served fraction (plus a small reward for
//! its total served traffic) and fix what it got; then (3) least cost under those floors.
//!
//! Phase 1 is first solved model by model: models only interact through the inventory, so when
//! the per-model optima fit the inventory together they are the optimum of the whole problem
//! (exactly, not approximately), and a fleet with room to spare never pays for one large MILP.

mod heuristic;
pub mod milp;
mod report;
pub mod solver;

use std::collections::BTreeMap;

use crate::analyze::fleet::{self, VariantCapacity};
use crate::plan::{PhaseReport, Plan, PlanMode, PlanStatus};
use crate::scenario::Snapshot;
use milp::{DemandId, Floors, Handles, Objective};
use solver::{SolveError, SolveOptions, Solved};

/// Traffic below this (solver noise) is reported as none.
const TRAFFIC_EPSILON_RPS: f64 = 1e-9;

/// Share of the time limit one fair-share phase may use.
const FAIR_SHARE_TIME_SHARE: f64 = 0.1;

/// Models solved together in one sub-problem of phase 1. One: measured on the benchmark fleets,
/// grouping 16 models per MILP (to share HiGHS's ~1–2 ms fixed cost per solve) made phase 1 8×
/// slower on the 100-model fleet and lost the incumbent on the 250-model one — a block of
/// independent models is much harder for branch-and-bound than the blocks one by one.
const MODELS_PER_SUBPROBLEM: usize = 1;

/// Rounds of per-model solves with inventory prices before handing over to the whole MILP.
const PRICE_ROUNDS: usize = 6;

/// A fixed floor is relaxed by this much so the next phase stays feasible despite solver tolerances.
const FLOOR_TOLERANCE: f64 = 1e-6;

/// Plan a snapshot. Pure: the same snapshot gives the same plan (except measured solve times).
pub fn plan(snapshot: &Snapshot) -> Plan {
    let caps = fleet::capacities(snapshot);
    let servable = milp::servable_demands(snapshot, &caps);
    let mut run = Run::new(snapshot, &caps, &servable);
    // Load that no variant can serve is not "all served", even though phase 1 (then only the
    // minimum replicas at least cost) is optimal.
    let has_load = snapshot.models.iter().any(|m| m.demands.iter().any(|d| d.arrival_rps > 0.0));
    let served_mode = if servable.is_empty() && has_load { PlanMode::NothingServable } else { PlanMode::AllServed };

    // Phase 1: everything served, least cost; per model first, the whole MILP if they collide.
    let serve_all = Floors { serve_all: true, ..Floors::default() };
    let start = match run.serve_all_by_model() {
        Decomposed::Fits(decision) => return run.finish(decision, served_mode),
        Decomposed::Infeasible => None,
        Decomposed::Start(replicas, traffic) => Some(Some((replicas, traffic))),
        Decomposed::Collides => Some(None),
    };
    if let Some(start) = start {
        match run.phase_from("serve_all", &Objective::Cost, &serve_all, start.as_ref()) {
            Ok((solved, handles)) => return run.finish(decision(&solved, &handles), served_mode),
            Err(SolveError::Infeasible) => {}
            Err(e) => return run.fallback(e),
        }
    }

    // Phase 2: scarcity. Tiers by priority, most important (smallest number) first. Each phase
    // starts from the previous one's solution, which satisfies every floor fixed so far.
    let mut tiers: BTreeMap<u32, Vec<DemandId>> = BTreeMap::new();
    for &(m, k) in &servable {
        let class = &snapshot.classes[snapshot.models[m].demands[k].class];
        tiers.entry(class.priority).or_default().push((m, k));
    }
    let mut floors = Floors::default();
    let mut start: Option<Vec<f64>> = None;
    for (priority, tier) in tiers {
        let objective = Objective::FairShare { tier: tier.clone() };
        let name = format!("fair_share_priority_{priority}");
        match run.phase(&name, &objective, &floors, start.as_deref()) {
            Ok((solved, handles)) => {
                fix_tier(snapshot, &tier, &solved, &handles, &mut floors);
                start = Some(with_t_zero(&solved, &handles));
            }
            Err(e) => return run.fallback(e),
        }
    }

    // Phase 3: least cost under the floors.
    match run.phase("cost", &Objective::Cost, &floors, start.as_deref()) {
        Ok((solved, handles)) => run.finish(decision(&solved, &handles), PlanMode::FairShare),
        Err(e) => run.fallback(e),
    }
}

/// Fix a solved tier's weighted minimum t* and its total served traffic; how the tier's traffic
/// splits above its floors stays free for later phases.
fn fix_tier(snapshot: &Snapshot, tier: &[DemandId], solved: &Solved, handles: &Handles, floors: &mut Floors) {
    let weights = milp::tier_weights(snapshot, tier);
    let t = tier.iter().zip(&weights).map(|(d, w)| solved.value(handles.served[d]) / w).fold(1.0_f64, f64::min);
    let mut served_rps = 0.0;
    let mut total_rps = 0.0;
    for (d, w) in tier.iter().zip(&weights) {
        floors.served_fraction.insert(*d, (w * t - FLOOR_TOLERANCE).max(0.0));
        let lambda = snapshot.models[d.0].demands[d.1].arrival_rps;
        served_rps += solved.value(handles.served[d]) * lambda;
        total_rps += lambda;
    }
    floors.served_rps.push((tier.to_vec(), (served_rps - FLOOR_TOLERANCE * total_rps).max(0.0)));
}

/// A solution as the start of the next phase: t is 0 there until that phase raises it.
fn with_t_zero(solved: &Solved, handles: &Handles) -> Vec<f64> {
    let mut start = solved.columns.clone();
    if let Some(i) = handles.columns.iter().position(|c| *c == handles.t) {
        start[i] = 0.0;
    }
    start
}

/// Traffic per variant: (demand position in its model, req/s).
type Routing = Vec<Vec<(usize, f64)>>;

/// Replicas and traffic chosen by a solve.
struct Decision {
    replicas: Vec<u32>,
    traffic: Routing,
    mip_gap: f64,
    objective: f64,
}

fn decision(solved: &Solved, handles: &Handles) -> Decision {
    Decision {
        replicas: handles.replicas.iter().map(|&n| solved.value(n).round().max(0.0) as u32).collect(),
        traffic: handles
            .traffic
            .iter()
            .map(|xs| {
                xs.iter().map(|&(k, x)| (k, solved.value(x))).filter(|&(_, rps)| rps > TRAFFIC_EPSILON_RPS).collect()
            })
            .collect(),
        mip_gap: solved.mip_gap,
        objective: solved.objective,
    }
}

/// One round of per-model solves.
struct Round {
    decision: Decision,
    status: PlanStatus,
    solve_ms: f64,
}

/// GPUs used per accelerator type by a replica vector.
fn gpus_used(snapshot: &Snapshot, replicas: &[u32]) -> Vec<f64> {
    let mut used = vec![0.0; snapshot.accelerators.len()];
    for (v, &n) in snapshot.variants.iter().zip(replicas) {
        used[v.accelerator] += f64::from(n) * f64::from(v.gpus_per_replica);
    }
    used
}

enum Decomposed {
    /// The per-model optima fit the inventory together: optimal for the whole problem.
    Fits(Decision),
    /// Priced per-model solutions fit: feasible, a start for the whole MILP.
    Start(Vec<u32>, Routing),
    /// Some model cannot be served fully even alone.
    Infeasible,
    /// Together they exceed the inventory (or a sub-solve failed): solve the whole MILP.
    Collides,
}

/// State of one planning run across its phases.
struct Run<'a> {
    snapshot: &'a Snapshot,
    caps: &'a [VariantCapacity],
    servable: &'a [DemandId],
    phases: Vec<PhaseReport>,
    status: PlanStatus,
    elapsed_ms: f64,
}

impl<'a> Run<'a> {
    fn new(snapshot: &'a Snapshot, caps: &'a [VariantCapacity], servable: &'a [DemandId]) -> Self {
        Self { snapshot, caps, servable, phases: Vec::new(), status: PlanStatus::Optimal, elapsed_ms: 0.0 }
    }

    fn options(&self) -> SolveOptions {
        self.options_within(f64::INFINITY)
    }

    /// Options for a solve that may use at most `budget_s` of what is left of the time limit.
    fn options_within(&self, budget_s: f64) -> SolveOptions {
        let settings = &self.snapshot.settings;
        SolveOptions {
            time_limit_s: (settings.time_limit_s - self.elapsed_ms / 1e3).min(budget_s).max(0.05),
            mip_gap: settings.mip_gap,
            verbose: settings.solver_log,
            extra: settings.solver_options.clone(),
        }
    }

    fn record(&mut self, name: &str, result: &Result<(Solved, Handles), SolveError>) {
        match result {
            Ok((solved, _)) => {
                self.elapsed_ms += solved.solve_ms;
                self.phases.push(PhaseReport {
                    name: name.to_string(),
                    solver_status: format!("{:?}", solved.status),
                    solve_ms: solved.solve_ms,
                    mip_gap: solved.mip_gap,
                    objective: solved.objective,
                });
                self.status = worse(self.status, status_of(solved));
            }
            Err(e) => self.phases.push(PhaseReport {
                name: name.to_string(),
                solver_status: e.to_string(),
                solve_ms: 0.0,
                mip_gap: 0.0,
                objective: 0.0,
            }),
        }
    }

    /// Solve a phase starting from a replica vector and its routing.
    fn phase_from(
        &mut self,
        name: &str,
        objective: &Objective,
        floors: &Floors,
        start: Option<&(Vec<u32>, Routing)>,
    ) -> Result<(Solved, Handles), SolveError> {
        let point = start.map(|(replicas, traffic)| {
            let handles = milp::build(self.snapshot, self.caps, self.servable, objective, floors).handles;
            milp::point_from(self.snapshot, &handles, replicas, traffic)
        });
        self.phase(name, objective, floors, point.as_deref())
    }

    /// Solve one phase of the whole problem within what is left of the time limit.
    fn phase(
        &mut self,
        name: &str,
        objective: &Objective,
        floors: &Floors,
        start: Option<&[f64]>,
    ) -> Result<(Solved, Handles), SolveError> {
        let model = milp::build(self.snapshot, self.caps, self.servable, objective, floors);
        // Without a start, a phase that fixes no floor can begin from "serve nothing", so HiGHS
        // always holds an incumbent to improve (and to return at the time limit).
        let base = match start {
            Some(s) => Some(s.to_vec()),
            None => (!floors.serve_all && floors.served_fraction.is_empty())
                .then(|| milp::minimal_point(self.snapshot, &model.handles)),
        };
        // A fair-share phase starts from a water-filled incumbent (see heuristic.rs).
        let start = match (objective, base) {
            (Objective::FairShare { tier }, Some(base)) => {
                let earlier: Vec<DemandId> = floors.served_fraction.keys().copied().collect();
                Some(heuristic::water_fill(self.snapshot, self.caps, &model.handles, tier, &earlier, &base))
            }
            (_, base) => base,
        };
        // Max-min phases rarely prove optimality (their LP bound ignores that every served model
        // needs a whole replica), so each gets a share of the time limit and keeps its incumbent.
        let options = match objective {
            Objective::FairShare { .. } => {
                self.options_within((self.snapshot.settings.time_limit_s * FAIR_SHARE_TIME_SHARE).max(0.2))
            }
            Objective::Cost => self.options(),
        };
        let result = solver::solve(model, options, start.as_deref());
        self.record(name, &result);
        result
    }

    /// Phase 1 model by model (see the module comment). When the per-model optima overfill
    /// some accelerator type, the rounds repeat with that type priced higher (a Lagrangian
    /// price on its inventory row) until the models fit together; that plan is feasible but no
    /// longer proven optimal, so it becomes the start of the whole MILP.
    fn serve_all_by_model(&mut self) -> Decomposed {
        let s = self.snapshot;
        let mut prices = vec![0.0; s.accelerators.len()];
        let (mut solve_ms, mut rounds) = (0.0, 0);
        let mut outcome = Decomposed::Collides;
        while rounds < PRICE_ROUNDS {
            rounds += 1;
            let round = match self.solve_models(&prices) {
                Ok(r) => r,
                Err(SolveError::Infeasible) => {
                    outcome = Decomposed::Infeasible;
                    break;
                }
                Err(_) => break,
            };
            solve_ms += round.solve_ms;
            let used = gpus_used(s, &round.decision.replicas);
            let over: Vec<f64> =
                s.accelerators.iter().zip(&used).map(|(a, &u)| (u - f64::from(a.gpus)).max(0.0)).collect();
            if rounds == 1 && !over.iter().all(|&o| o == 0.0) && !self.serve_all_relaxation_feasible() {
                // Not even fractional replicas serve everything: pricing cannot help.
                outcome = Decomposed::Infeasible;
                break;
            }
            if over.iter().all(|&o| o == 0.0) {
                if rounds == 1 {
                    self.status = worse(self.status, round.status);
                    outcome = Decomposed::Fits(round.decision);
                } else {
                    outcome = Decomposed::Start(round.decision.replicas, round.decision.traffic);
                }
                break;
            }
            // Raise each overfilled type's price in proportion to how far over it is.
            for (a, acc) in s.accelerators.iter().enumerate() {
                if over[a] > 0.0 {
                    let base = acc.cost_usd_per_gpu_hour.max(0.01);
                    prices[a] += base * (0.25 + over[a] / f64::from(acc.gpus.max(1)));
                }
            }
        }
        let label = match &outcome {
            Decomposed::Fits(_) => "fits".to_string(),
            Decomposed::Infeasible => "infeasible".to_string(),
            Decomposed::Start(..) => format!("fits after {rounds} priced rounds; start for the whole MILP"),
            Decomposed::Collides => format!("collides after {rounds} priced rounds"),
        };
        let (gap, objective) = match &outcome {
            Decomposed::Fits(d) => (d.mip_gap, d.objective),
            _ => (0.0, 0.0),
        };
        self.phases.push(PhaseReport {
            name: format!("serve_all_by_model ({} models)", s.models.len()),
            solver_status: label,
            solve_ms,
            mip_gap: gap,
            objective,
        });
        outcome
    }

    /// Whether the LP relaxation of phase 1 is feasible (milliseconds, even for large fleets).
    fn serve_all_relaxation_feasible(&mut self) -> bool {
        let floors = Floors { serve_all: true, ..Floors::default() };
        let lp = milp::build_relaxation(self.snapshot, self.caps, self.servable, &Objective::Cost, &floors);
        match solver::solve(lp, self.options(), None) {
            Ok((solved, _)) => {
                self.elapsed_ms += solved.solve_ms;
                true
            }
            Err(SolveError::Infeasible) => false,
            Err(_) => true,
        }
    }

    /// One round of per-model serve-all solves with extra prices per accelerator type.
    fn solve_models(&mut self, prices: &[f64]) -> Result<Round, SolveError> {
        let s = self.snapshot;
        let mut replicas = vec![0u32; s.variants.len()];
        let mut traffic = vec![Vec::new(); s.variants.len()];
        let (mut solve_ms, mut mip_gap, mut objective) = (0.0, 0.0_f64, 0.0);
        let mut status = PlanStatus::Optimal;
        let all: Vec<usize> = (0..s.models.len()).collect();
        for chunk in all.chunks(MODELS_PER_SUBPROBLEM) {
            let (mut sub, sub_caps, originals) = restrict_to_models(s, self.caps, chunk);
            for (acc, price) in sub.accelerators.iter_mut().zip(prices) {
                acc.cost_usd_per_gpu_hour += price;
            }
            let sub_servable: Vec<DemandId> =
                self.servable.iter().filter_map(|d| chunk.iter().position(|&m| m == d.0).map(|i| (i, d.1))).collect();
            let floors = Floors { serve_all: true, ..Floors::default() };
            let model = milp::build(&sub, &sub_caps, &sub_servable, &Objective::Cost, &floors);
            let (solved, handles) = solver::solve(model, self.options(), None)?;
            solve_ms += solved.solve_ms;
            self.elapsed_ms += solved.solve_ms;
            mip_gap = mip_gap.max(solved.mip_gap);
            objective += solved.objective;
            status = worse(status, status_of(&solved));
            let d = decision(&solved, &handles);
            for (i, &v) in originals.iter().enumerate() {
                replicas[v] = d.replicas[i];
                traffic[v] = d.traffic[i].clone();
            }
        }
        Ok(Round { decision: Decision { replicas, traffic, mip_gap, objective }, status, solve_ms })
    }

    fn finish(self, decision: Decision, mode: PlanMode) -> Plan {
        let extra_warnings = if mode == PlanMode::NothingServable {
            vec!["nothing is servable: no variant has capacity at the SLO for any load, or room in the inventory; the plan serves nothing".to_string()]
        } else {
            Vec::new()
        };
        report::assemble(
            self.snapshot,
            self.caps,
            report::Outcome {
                replicas: decision.replicas,
                traffic: decision.traffic,
                mode,
                status: self.status,
                phases: self.phases,
                solve_ms: self.elapsed_ms,
                mip_gap: decision.mip_gap,
                objective: decision.objective,
                extra_warnings,
            },
        )
    }

    /// No solution: keep the current replicas (never scale on a failed solve) and say why.
    fn fallback(self, error: SolveError) -> Plan {
        let replicas: Vec<u32> = self.snapshot.variants.iter().map(|v| v.current_replicas).collect();
        let traffic = report::route_proportionally(self.snapshot, self.caps, self.servable, &replicas);
        let mode = if self.phases.len() > 1 { PlanMode::FairShare } else { PlanMode::AllServed };
        report::assemble(
            self.snapshot,
            self.caps,
            report::Outcome {
                replicas,
                traffic,
                mode,
                status: PlanStatus::Fallback,
                phases: self.phases,
                solve_ms: self.elapsed_ms,
                mip_gap: 0.0,
                objective: 0.0,
                extra_warnings: vec![format!("solver found no plan ({error}); keeping the current replicas")],
            },
        )
    }
}

/// The part of a snapshot that concerns some models (all accelerators and classes kept), their
/// variants' capacities, and the original index of each of those variants.
fn restrict_to_models(
    snapshot: &Snapshot,
    caps: &[VariantCapacity],
    models: &[usize],
) -> (Snapshot, Vec<VariantCapacity>, Vec<usize>) {
    let position = |m: usize| models.iter().position(|&x| x == m);
    let originals: Vec<usize> =
        (0..snapshot.variants.len()).filter(|&v| position(snapshot.variants[v].model).is_some()).collect();
    let sub = Snapshot {
        models: models.iter().map(|&m| snapshot.models[m].clone()).collect(),
        variants: originals
            .iter()
            .map(|&v| {
                let model = position(snapshot.variants[v].model).expect("filtered above");
                crate::scenario::snapshot::Variant { model, ..snapshot.variants[v].clone() }
            })
            .collect(),
        warnings: Vec::new(),
        ..snapshot.clone_without_models_and_variants()
    };
    let sub_caps = originals.iter().map(|&v| caps[v].clone()).collect();
    (sub, sub_caps, originals)
}

fn status_of(solved: &Solved) -> PlanStatus {
    if solved.hit_time_limit() {
        PlanStatus::TimeLimit
    } else if solved.mip_gap > 1e-9 {
        PlanStatus::GapLimit
    } else {
        PlanStatus::Optimal
    }
}

fn worse(a: PlanStatus, b: PlanStatus) -> PlanStatus {
    let rank = |s: PlanStatus| match s {
        PlanStatus::Optimal => 0,
        PlanStatus::GapLimit => 1,
        PlanStatus::TimeLimit => 2,
        PlanStatus::Fallback => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}
