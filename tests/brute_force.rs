//! The MILP against exhaustive enumeration on many small random instances.
//!
//! With one class per model and measured capacities, the served fraction of a replica vector n
//! has a closed form, s_m(n) = min(1, Σ_v n_v·κ_v / λ_m), so every integer n can be scored by
//! the same lexicographic objective the optimizer uses (DESIGN §4): serve all at least cost if
//! possible; otherwise per priority tier maximize t (the minimum served fraction), then the
//! tier's served traffic at that t, fix both, and finally minimize cost plus transition cost.

use std::collections::BTreeMap;

use allot::analyze::Role;
use allot::optimize::plan;
use allot::plan::PlanMode;
use allot::scenario::format::*;
use allot::scenario::validate;
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Instance {
    types: Vec<(u32, f64)>,                            // (gpus, $/GPU-h)
    models: Vec<(u32, f64)>,                           // (priority, demand req/s)
    variants: Vec<(usize, usize, u32, f64, u32, u32)>, // (model, type, gpus, κ, max, current)
    change: f64,
    moving: f64,
}

fn instance() -> impl Strategy<Value = Instance> {
    let types = prop::collection::vec((2u32..=6, prop::sample::select(vec![1.0, 1.5, 2.0, 3.0])), 1..=2);
    let models = prop::collection::vec((1u32..=2, 0.5f64..8.0), 1..=3);
    (types, models, prop::sample::select(vec![0.0, 0.1]), prop::sample::select(vec![0.0, 0.1])).prop_flat_map(
        |(types, models, change, moving)| {
            let nt = types.len();
            let nm = models.len();
            let variant = (0..nm, 0..nt, 1u32..=2, 0.5f64..4.0, 1u32..=3, 0u32..=2);
            prop::collection::vec(variant, nm..=5).prop_map(move |mut variants| {
                // Every model gets at least one variant.
                for (m, v) in variants.iter_mut().enumerate().take(nm) {
                    v.0 = m;
                }
                Instance { types: types.clone(), models: models.clone(), variants, change, moving }
            })
        },
    )
}

fn scenario(inst: &Instance) -> Scenario {
    let class = |p: u32| format!("p{p}");
    let model = |m: usize| format!("m{m}");
    let mut service_classes: BTreeMap<u32, ServiceClassSpec> = BTreeMap::new();
    for (m, (p, _)) in inst.models.iter().enumerate() {
        service_classes
            .entry(*p)
            .or_insert_with(|| ServiceClassSpec { name: class(*p), priority: *p, weight: None, targets: vec![] })
            .targets
            .push(ClassTargetSpec {
                model: model(m),
                ttft: None,
                itl: Some(TargetSpec { ms: 50.0, statistic: Default::default(), over: None }),
            });
    }
    Scenario {
        name: None,
        accelerators: inst
            .types
            .iter()
            .enumerate()
            .map(|(a, &(gpus, cost))| AcceleratorSpec {
                name: format!("t{a}"),
                device: None,
                gpus,
                cost_usd_per_gpu_hour: cost,
            })
            .collect(),
        service_classes: service_classes.into_values().collect(),
        load: inst
            .models
            .iter()
            .enumerate()
            .map(|(m, &(p, rps))| LoadSpec {
                model: model(m),
                class: class(p),
                arrival_rate_rps: rps,
                input_tokens: 10.0.into(),
                output_tokens: 10.0.into(),
                arrival_cv: None,
            })
            .collect(),
        variants: inst
            .variants
            .iter()
            .enumerate()
            .map(|(i, &(m, a, gpus, kappa, max, current))| VariantSpec {
                name: format!("v{i}"),
                model: model(m),
                accelerator: format!("t{a}"),
                gpus_per_replica: gpus,
                role: Role::Both,
                max_batch: 8,
                min_replicas: 0,
                max_replicas: Some(max),
                current_replicas: current,
                profile: None,
                capacity_rps: BTreeMap::from([(class(inst.models[m].0), kappa)]),
                engine: None,
            })
            .collect(),
        profiles: vec![],
        optimizer: OptimizerSpec {
            mip_gap: 0.0,
            transition: TransitionSpec { replica_change_fraction: inst.change, accelerator_move_fraction: inst.moving },
            ..OptimizerSpec::default()
        },
        min_replicas: Default::default(),
        import_notes: vec![],
    }
}

/// Score of one replica vector.
struct Scored {
    served: Vec<f64>,
    cost: f64,
}

fn enumerate(inst: &Instance) -> Vec<Scored> {
    let caps: Vec<u32> = inst.variants.iter().map(|&(_, a, gpus, _, max, _)| max.min(inst.types[a].0 / gpus)).collect();
    let mut on_type_now = vec![vec![false; inst.types.len()]; inst.models.len()];
    for &(m, a, _, _, _, current) in &inst.variants {
        if current > 0 {
            on_type_now[m][a] = true;
        }
    }
    let mut out = Vec::new();
    let mut n = vec![0u32; inst.variants.len()];
    loop {
        let mut used = vec![0u32; inst.types.len()];
        for (v, &(_, a, gpus, ..)) in inst.variants.iter().enumerate() {
            used[a] += n[v] * gpus;
        }
        if used.iter().zip(&inst.types).all(|(u, (c, _))| u <= c) {
            let mut supply = vec![0.0; inst.models.len()];
            let mut cost = 0.0;
            for (v, &(m, a, gpus, kappa, _, current)) in inst.variants.iter().enumerate() {
                supply[m] += f64::from(n[v]) * kappa;
                let c = f64::from(gpus) * inst.types[a].1;
                let moving = if on_type_now[m][a] { 0.0 } else { inst.moving };
                cost += f64::from(n[v]) * c * (1.0 + moving) + inst.change * c * f64::from(n[v].abs_diff(current));
            }
            let served = inst.models.iter().zip(&supply).map(|((_, rps), s)| (s / rps).min(1.0)).collect();
            out.push(Scored { served, cost });
        }
        // next vector
        let mut i = 0;
        loop {
            if i == n.len() {
                return out;
            }
            if n[i] < caps[i] {
                n[i] += 1;
                break;
            }
            n[i] = 0;
            i += 1;
        }
    }
}

/// (mode, per-tier minimum served fraction, final objective) by brute force.
fn brute_force(inst: &Instance) -> (PlanMode, BTreeMap<u32, f64>, f64) {
    let all = enumerate(inst);
    let tier_min = |s: &Scored, p: u32| -> f64 {
        inst.models.iter().enumerate().filter(|(_, m)| m.0 == p).map(|(i, _)| s.served[i]).fold(1.0, f64::min)
    };
    let served_all: Vec<&Scored> = all.iter().filter(|s| s.served.iter().all(|&f| f >= 1.0 - 1e-12)).collect();
    if !served_all.is_empty() {
        let best = served_all.iter().map(|s| s.cost).fold(f64::INFINITY, f64::min);
        let tiers = inst.models.iter().map(|m| (m.0, 1.0)).collect();
        return (PlanMode::AllServed, tiers, best);
    }
    let mut candidates: Vec<&Scored> = all.iter().collect();
    let mut tiers = BTreeMap::new();
    let priorities: std::collections::BTreeSet<u32> = inst.models.iter().map(|m| m.0).collect();
    for p in priorities {
        let total: f64 = inst.models.iter().filter(|m| m.0 == p).map(|m| m.1).sum();
        let served_rps = |s: &Scored| -> f64 {
            inst.models.iter().enumerate().filter(|(_, m)| m.0 == p).map(|(i, m)| s.served[i] * m.1).sum()
        };
        // Lexicographic: t first (levels within 1e-9 are one level), then served traffic.
        let order = |a: &Scored, b: &Scored| {
            let (ta, tb) = (tier_min(a, p), tier_min(b, p));
            if (ta - tb).abs() > 1e-9 { ta.total_cmp(&tb) } else { served_rps(a).total_cmp(&served_rps(b)) }
        };
        let best = candidates.iter().copied().max_by(|a, b| order(a, b)).expect("n = 0 is always feasible");
        let (t, rps) = (tier_min(best, p), served_rps(best));
        tiers.insert(p, t);
        candidates.retain(|s| tier_min(s, p) >= t - 1e-6 && served_rps(s) >= rps - 1e-6 * total);
    }
    let best = candidates.iter().map(|s| s.cost).fold(f64::INFINITY, f64::min);
    (PlanMode::FairShare, tiers, best)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn milp_matches_exhaustive_enumeration(inst in instance()) {
        let snapshot = validate(&scenario(&inst)).expect("generated scenarios are valid");
        let p = plan(&snapshot);
        let (mode, tiers, objective) = brute_force(&inst);
        prop_assert_eq!(p.mode, mode, "plan {:#?}", p.models);
        for (priority, t) in &tiers {
            let got = p.models.iter().filter(|m| m.priority == *priority).map(|m| m.served_fraction).fold(1.0, f64::min);
            prop_assert!((got - t).abs() < 1e-4, "tier {}: MILP min served {} vs brute force {}", priority, got, t);
        }
        prop_assert!((p.objective - objective).abs() < 1e-4 * objective.max(1.0),
            "objective: MILP {} vs brute force {}", p.objective, objective);
    }
}
