//! One fair-share tier: the largest weighted minimum served fraction t that whole replicas can
//! give every demand of the tier, by a search over t with fixed-level probes.
//!
//! Maximizing t directly in one MILP has a useless LP bound: the relaxation covers every model
//! with slivers of replicas (on the 100-model scarce benchmark fleet it says t ≈ 0.75 while the
//! optimum is 0.662), and branch-and-bound cannot close that gap because no single branching
//! decision moves the bound. With t fixed, the question "can every demand d get s_d ≥ w_d·t?"
//! has constant right-hand sides, so each model's covering rows (Σ κ·n ≥ t·λ, integer n) get
//! HiGHS's rounding cuts and the inventory rows decide the rest — a feasibility MILP that HiGHS
//! answers in a few nodes, proving infeasibility as easily as finding a point. The search
//! keeps a feasible level `t_lo` (a water-filled start, then every feasible probe's solution at
//! the level its replicas actually reach) and a proven bound `t_hi` (the LP relaxation, then
//! every probe proven infeasible), and bisects until they are within the tolerance.

use super::milp::{self, DemandId, Floors, Handles, Objective};
use super::solver::{HighsValue, SolveError, Solved};
use super::{Run, heuristic};
use crate::plan::TierReport;

/// Absolute resolution of the search on t: levels closer than this are not told apart (a
/// hundred-thousandth of a demand). Far above HiGHS's feasibility tolerance on s (≈1e-9 for
/// loads of 1 req/s and more), far below what a whole replica changes. It also ends a tier
/// whose relaxation already says that some demand can get next to nothing: telling 4e-6 from
/// 6e-6 cost the 100-model scarce fleet 3 s of probes.
const LEVEL_RESOLUTION: f64 = 1e-5;

/// Once a tier is proven within its tolerance, the search refines its level towards this
/// (relative) while probes keep resolving, and stops at the first that does not: the probes
/// just above a hard optimum are the ones branch-and-bound cannot decide, and each cost the
/// scarce 100-model fleet about 1.2 s for a gain below 1e-5.
const REFINED_TOLERANCE: f64 = 1e-5;

/// HiGHS's primal heuristic effort in a probe (its default is 0.05). A probe is a pure
/// feasibility question, and the feasible probes just below the optimum are found by the
/// heuristics or not at all: on the scarce 100-model fleet, six random seeds at the default
/// effort reached t within 1.6 % of the optimum (one seed) or 0.15 % (the rest); at 0.3, five
/// of six reached the optimum and the sixth was 0.14 % below it.
const PROBE_HEURISTIC_EFFORT: f64 = 0.3;

/// A probe's solution may miss its level by solver tolerance; more than this and the probe
/// proves nothing.
const PROBE_SLACK: f64 = 1e-7;

/// When the bracket [t_lo, ceiling] is this many tolerances wide or less, probe just above
/// t_lo instead of at the midpoint: the levels whole replicas reach are discrete, so "is there
/// anything above t_lo?" usually ends the search in one infeasible probe, where bisection
/// would need several.
const NARROW_BRACKET: f64 = 64.0;

/// Probes a tier's search may leave unresolved (node limit, no answer) before it stops.
const MAX_UNRESOLVED_PROBES: u32 = 3;

/// What the search of one tier found.
pub(super) struct TierSearch {
    /// The best point found (one value per column), feasible for every floor and reaching `t_lo`.
    pub point: Vec<f64>,
    pub report: TierReport,
}

/// The weighted minimum of a tier at a point: min_d s_d / w_d.
pub(super) fn level(
    handles: &Handles,
    tier: &[DemandId],
    weights: &[f64],
    value: &dyn Fn(good_lp::Variable) -> f64,
) -> f64 {
    tier.iter().zip(weights).map(|(d, w)| value(handles.served[d]) / w).fold(1.0_f64, f64::min).clamp(0.0, 1.0)
}

impl Run<'_> {
    /// Search the tier's level under `floors` (earlier tiers), starting from `base`, a feasible
    /// point of every phase's columns.
    pub(super) fn search_tier(
        &mut self,
        priority: u32,
        tier: &[DemandId],
        floors: &Floors,
        base: &[f64],
    ) -> Result<TierSearch, SolveError> {
        let snapshot = self.snapshot;
        let weights = milp::tier_weights(snapshot, tier);
        let tolerance = self.options.limits.level_tolerance;
        let probe_options = |run: &Self| {
            let mut options = run.solve_options(Some(run.options.limits.probe_nodes));
            // (First, so that ALLOT_HIGHS_OPTIONS can override it.)
            options.extra.insert(0, ("mip_heuristic_effort".to_string(), HighsValue::Float(PROBE_HEURISTIC_EFFORT)));
            options
        };
        let name = format!("fair_share_priority_{priority}");

        // Lower bound: water-filling from the base (heuristic.rs), at the level it reaches.
        let objective = Objective::FairShare { tier: tier.to_vec() };
        let handles = milp::build(snapshot, self.caps, self.servable, &objective, floors).handles;
        let earlier: Vec<DemandId> = floors.served_fraction.keys().copied().collect();
        let filled = heuristic::water_fill(snapshot, self.caps, &handles, tier, &earlier, base);
        let mut point = self.best_routing(&name, tier, floors, &handles, &filled).unwrap_or(filled);
        let value_at = |point: &[f64]| {
            let at: std::collections::HashMap<good_lp::Variable, f64> =
                handles.columns.iter().copied().zip(point.iter().copied()).collect();
            level(&handles, tier, &weights, &|v| at.get(&v).copied().unwrap_or(0.0))
        };
        let mut t_lo = value_at(&point);

        // Upper bound: the LP relaxation of max t (loose, but proven).
        // (Of t alone: with the served reward the LP could trade t for traffic and bound less.)
        let level = Objective::Level { tier: tier.to_vec() };
        let relaxation = milp::build_relaxation(snapshot, self.caps, self.servable, &level, floors);
        let t_col = relaxation.handles.t;
        let mut t_hi = match self.solve_recorded(&format!("{name}: LP bound"), relaxation, None, None) {
            Ok((solved, _)) => solved.value(t_col).clamp(0.0, 1.0),
            Err(SolveError::Infeasible) => return Err(SolveError::Infeasible),
            Err(_) => 1.0,
        };
        // A probe stopped by its node limit proves nothing; the search stays below it.
        let mut t_unknown = t_hi;
        let mut probes = 0;
        let mut unresolved = 0;
        let step = |hi: f64| (REFINED_TOLERANCE.min(tolerance) * hi).max(LEVEL_RESOLUTION);
        let done = |lo: f64, hi: f64| hi - lo <= step(hi);
        let within_tolerance = |lo: f64, hi: f64| hi - lo <= (tolerance * hi).max(LEVEL_RESOLUTION);
        // Probes stopped by their node limit tend to come in runs (the levels near a hard
        // optimum); after a few the search stops and reports the tier as unproven, and after
        // one once the tier is proven within its tolerance.
        while !done(t_lo, t_unknown.min(t_hi))
            && probes < self.options.limits.max_probes
            && unresolved < MAX_UNRESOLVED_PROBES
            && !(unresolved > 0 && within_tolerance(t_lo, t_hi))
        {
            probes += 1;
            let ceiling = t_unknown.min(t_hi);
            // A first probe just above a level near zero asks whether every demand can get a
            // replica at all (the common reason for t = 0); a narrow bracket asks whether
            // anything beats t_lo; otherwise bisect.
            let narrow = ceiling - t_lo <= NARROW_BRACKET * step(ceiling);
            let near_zero = probes == 1 && t_lo < 0.05 * ceiling;
            let t = if near_zero || narrow { (t_lo + step(ceiling)).min(ceiling) } else { 0.5 * (t_lo + ceiling) };
            let mut probe_floors = floors.clone();
            for (d, w) in tier.iter().zip(&weights) {
                let f = probe_floors.served_fraction.entry(*d).or_insert(0.0);
                *f = f.max(w * t);
            }
            let model = milp::build(snapshot, self.caps, self.servable, &Objective::Feasibility, &probe_floors);
            let options = probe_options(self);
            match self.solve_recorded_with(&format!("{name}: probe t = {t:.5}"), model, None, options) {
                Ok((solved, probe_handles)) => {
                    // The replicas may reach more than the probe asked: route them for the most.
                    let found = solved.columns.clone();
                    let routed = self.best_routing(&name, tier, floors, &probe_handles, &found).unwrap_or(found);
                    let reached = value_at(&routed);
                    if reached < t - PROBE_SLACK {
                        // Feasible only within the solver's tolerances: no proof either way.
                        unresolved += 1;
                        t_unknown = t;
                    } else if reached > t_lo {
                        // (t_hi is proven; a level above an unresolved probe's clears it.)
                        t_lo = reached.min(t_hi);
                        if t_lo >= t_unknown {
                            t_unknown = t_hi;
                        }
                        point = routed;
                    }
                }
                Err(SolveError::Infeasible) => t_hi = t,
                Err(SolveError::NoIncumbent) => {
                    unresolved += 1;
                    t_unknown = t;
                }
                Err(e) => return Err(e),
            }
        }
        let upper = t_hi.max(t_lo);
        let proven = within_tolerance(t_lo, upper);
        let report = TierReport {
            priority,
            // (+0.0: a level of -0.0 would print as "-0")
            min_served_fraction: t_lo.max(0.0) + 0.0,
            upper_bound: upper,
            gap: upper - t_lo,
            probes,
            unresolved_probes: unresolved,
            proven,
        };
        Ok(TierSearch { point, report })
    }

    /// The routing of a point's replicas that maximizes the tier's level, then its served
    /// traffic (an LP with the replicas fixed), as a point of the phase columns.
    fn best_routing(
        &mut self,
        name: &str,
        tier: &[DemandId],
        floors: &Floors,
        handles: &Handles,
        point: &[f64],
    ) -> Option<Vec<f64>> {
        let replicas: Vec<u32> = handles
            .replicas
            .iter()
            .map(|n| {
                let i = handles.columns.iter().position(|c| c == n).expect("a column of the model");
                point[i].round().max(0.0) as u32
            })
            .collect();
        let fixed = Floors { fixed_replicas: Some(replicas), ..floors.clone() };
        let objective = Objective::FairShare { tier: tier.to_vec() };
        let lp = milp::build(self.snapshot, self.caps, self.servable, &objective, &fixed);
        match self.solve_recorded(&format!("{name}: routing"), lp, None, None) {
            Ok((solved, _)) => Some(without_t(&solved, handles)),
            Err(_) => None,
        }
    }
}

/// A solution's columns with t at 0, as the start of a phase where t is fixed at 0.
pub(super) fn without_t(solved: &Solved, handles: &Handles) -> Vec<f64> {
    let mut start = solved.columns.clone();
    if let Some(i) = handles.columns.iter().position(|c| *c == handles.t) {
        start[i] = 0.0;
    }
    start
}
