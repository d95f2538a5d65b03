//! Optimization: the lexicographic MILP of DESIGN §4, from a snapshot to a plan.
//!
//! Phases: (1) serve every demand at least cost; if GPUs are short, (2) per priority tier, most
//! important first, maximize the tier's weighted minimum served fraction (plus a small reward for
//! its total served traffic) and fix what it got; then (3) least cost under those floors.

pub mod solver;
pub mod milp;
mod report;

use std::collections::BTreeMap;

use crate::analyze::fleet::{self, VariantCapacity};
use crate::plan::{Plan, PlanMode, PlanStatus};
use crate::scenario::Snapshot;
use solver::{SolveError, SolveOptions, Solved};
use milp::{DemandId, Floors, Handles, Objective};

/// Traffic below this (solver noise) is reported as none.
const TRAFFIC_EPSILON_RPS: f64 = 1e-9;

/// A fixed floor is relaxed by this much so the next phase stays feasible despite solver tolerances.
const FLOOR_TOLERANCE: f64 = 1e-6;

/// Plan a snapshot. Pure: the same snapshot gives the same plan (except measured solve times).
pub fn plan(snapshot: &Snapshot) -> Plan {
    let caps = fleet::capacities(snapshot);
    let servable = milp::servable_demands(snapshot, &caps);
    let mut run = Run::new(snapshot, &caps, &servable);

    // Phase 1: everything served, least cost.
    let serve_all = Floors { serve_all: true, ..Floors::default() };
    match run.phase("serve_all", &Objective::Cost, &serve_all) {
        Ok((solved, handles)) => return run.finish(&solved, &handles, PlanMode::AllServed),
        Err(SolveError::Infeasible) => {}
        Err(e) => return run.fallback(e),
    }

    // Phase 2: scarcity. Tiers by priority, most important (smallest number) first.
    let mut tiers: BTreeMap<u32, Vec<DemandId>> = BTreeMap::new();
    for &(m, k) in &servable {
        let class = &snapshot.classes[snapshot.models[m].demands[k].class];
        tiers.entry(class.priority).or_default().push((m, k));
    }
    let mut floors = Floors::default();
    for (priority, tier) in tiers {
        let objective = Objective::FairShare { tier: tier.clone() };
        match run.phase(&format!("fair_share_priority_{priority}"), &objective, &floors) {
            Ok((solved, handles)) => {
                // Fix the tier's weighted minimum t* and its total served traffic; how the
                // tier's traffic splits above its floors stays free for later phases.
                let weights = milp::tier_weights(snapshot, &tier);
                let t = tier
                    .iter()
                    .zip(&weights)
                    .map(|(d, w)| solved.value(handles.served[d]) / w)
                    .fold(1.0_f64, f64::min);
                let mut served_rps = 0.0;
                for (d, w) in tier.iter().zip(&weights) {
                    floors.served_fraction.insert(*d, (w * t - FLOOR_TOLERANCE).max(0.0));
                    served_rps += solved.value(handles.served[d]) * snapshot.models[d.0].demands[d.1].arrival_rps;
                }
                let total_rps: f64 = tier.iter().map(|d| snapshot.models[d.0].demands[d.1].arrival_rps).sum();
                floors.served_rps.push((tier.clone(), (served_rps - FLOOR_TOLERANCE * total_rps).max(0.0)));
            }
            Err(e) => return run.fallback(e),
        }
    }

    // Phase 3: least cost under the floors.
    match run.phase("cost", &Objective::Cost, &floors) {
        Ok((solved, handles)) => run.finish(&solved, &handles, PlanMode::FairShare),
        Err(e) => run.fallback(e),
    }
}

/// State of one planning run across its phases.
struct Run<'a> {
    snapshot: &'a Snapshot,
    caps: &'a [VariantCapacity],
    servable: &'a [DemandId],
    phases: Vec<crate::plan::PhaseReport>,
    status: PlanStatus,
    elapsed_ms: f64,
}

impl<'a> Run<'a> {
    fn new(snapshot: &'a Snapshot, caps: &'a [VariantCapacity], servable: &'a [DemandId]) -> Self {
        Self { snapshot, caps, servable, phases: Vec::new(), status: PlanStatus::Optimal, elapsed_ms: 0.0 }
    }

    /// Solve one phase within what is left of the time limit.
    fn phase(&mut self, name: &str, objective: &Objective, floors: &Floors) -> Result<(Solved, Handles), SolveError> {
        let settings = &self.snapshot.settings;
        let left_s = (settings.time_limit_s - self.elapsed_ms / 1e3).max(0.05);
        let model = milp::build(self.snapshot, self.caps, self.servable, objective, floors);
        let result = solver::solve(model, SolveOptions { time_limit_s: left_s, mip_gap: settings.mip_gap });
        match &result {
            Ok((solved, _)) => {
                self.elapsed_ms += solved.solve_ms;
                self.phases.push(crate::plan::PhaseReport {
                    name: name.to_string(),
                    solver_status: format!("{:?}", solved.status),
                    solve_ms: solved.solve_ms,
                    mip_gap: solved.mip_gap,
                    objective: solved.objective,
                });
                let status = if solved.hit_time_limit() {
                    PlanStatus::TimeLimit
                } else if solved.mip_gap > 1e-9 {
                    PlanStatus::GapLimit
                } else {
                    PlanStatus::Optimal
                };
                self.status = worse(self.status, status);
            }
            Err(e) => self.phases.push(crate::plan::PhaseReport {
                name: name.to_string(),
                solver_status: e.to_string(),
                solve_ms: 0.0,
                mip_gap: 0.0,
                objective: 0.0,
            }),
        }
        result
    }

    fn finish(self, solved: &Solved, handles: &Handles, mode: PlanMode) -> Plan {
        let replicas: Vec<u32> = handles.replicas.iter().map(|&n| solved.value(n).round().max(0.0) as u32).collect();
        let traffic: Vec<Vec<(usize, f64)>> = handles
            .traffic
            .iter()
            .map(|xs| xs.iter().map(|&(k, x)| (k, solved.value(x))).filter(|&(_, rps)| rps > TRAFFIC_EPSILON_RPS).collect())
            .collect();
        report::assemble(
            self.snapshot,
            self.caps,
            report::Outcome {
                replicas,
                traffic,
                mode,
                status: self.status,
                phases: self.phases,
                solve_ms: self.elapsed_ms,
                mip_gap: solved.mip_gap,
                objective: solved.objective,
                extra_warnings: Vec::new(),
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

fn worse(a: PlanStatus, b: PlanStatus) -> PlanStatus {
    let rank = |s: PlanStatus| match s {
        PlanStatus::Optimal => 0,
        PlanStatus::GapLimit => 1,
        PlanStatus::TimeLimit => 2,
        PlanStatus::Fallback => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}
