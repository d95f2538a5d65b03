//! Capacity of one replica at an SLO (DESIGN §3 "Sizing"): the largest arrival rate whose
//! TTFT and ITL statistics meet their targets, never above a stability margin of saturation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::queue::{ReplicaModel, Steady};
use super::{ItlPopulation, Role, Statistic};

/// Relative precision of the capacity (on λ).
const RELATIVE_TOLERANCE: f64 = 1e-4;

/// A latency target: `statistic` of the latency must not exceed `ms`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Target {
    pub ms: f64,
    pub statistic: Statistic,
    /// For ITL: over each request's mean (default) or over every token. Ignored for TTFT.
    #[serde(default)]
    pub over: ItlPopulation,
}

impl Target {
    pub fn new(ms: f64, statistic: Statistic) -> Self {
        Self { ms, statistic, over: ItlPopulation::Request }
    }
}

/// The latency targets of a traffic class; a missing target does not constrain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Slo {
    pub ttft: Option<Target>,
    pub itl: Option<Target>,
}

/// What bounds a capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapacityLimit {
    /// The TTFT target binds.
    Ttft,
    /// The ITL target binds.
    Itl,
    /// The targets are met up to the stability margin `max_utilization·λ*`.
    Stability,
    /// A measured capacity from the scenario replaces the model.
    Measured,
}

impl CapacityLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityLimit::Ttft => "ttft",
            CapacityLimit::Itl => "itl",
            CapacityLimit::Stability => "stability",
            CapacityLimit::Measured => "measured",
        }
    }
}

/// The capacity of one replica for one class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    /// Largest arrival rate meeting the SLO (req/s); 0 when infeasible.
    pub rps: f64,
    pub limited_by: CapacityLimit,
    /// Why no positive rate meets the SLO, when none does.
    pub infeasible: Option<String>,
}

impl Capacity {
    fn infeasible(limited_by: CapacityLimit, why: String) -> Self {
        Self { rps: 0.0, limited_by, infeasible: Some(why) }
    }
}

/// One target on one metric.
#[derive(Clone, Copy, Debug)]
struct Constraint {
    limit: CapacityLimit,
    target: Target,
}

impl Constraint {
    /// The constrained statistic's value (ms).
    fn value_ms(&self, steady: &Steady<'_>) -> f64 {
        match self.limit {
            CapacityLimit::Ttft => steady.ttft_ms(self.target.statistic),
            CapacityLimit::Itl => steady.itl_ms(self.target.statistic, self.target.over),
            CapacityLimit::Stability | CapacityLimit::Measured => 0.0,
        }
    }

    /// How far the statistic is from its target, signed (≤ 0: met), continuous and
    /// non-decreasing in the load: a mean by value/target − 1, a percentile by q − P(X ≤ target)
    /// (P(X ≤ target) ≥ q ⟺ the q-quantile ≤ target: one CDF evaluation instead of a quantile
    /// search). A NaN counts as missed by +∞, so bad numbers never pass as capacity.
    fn margin(&self, steady: &Steady<'_>) -> f64 {
        let t = &self.target;
        let margin = match t.statistic.quantile() {
            None => {
                let value = match self.limit {
                    CapacityLimit::Ttft => steady.mean_ttft_ms(),
                    _ => steady.mean_itl_ms(t.over),
                };
                value / t.ms - 1.0
            }
            Some(q) => {
                let below = match self.limit {
                    CapacityLimit::Ttft => steady.ttft_cdf(t.ms),
                    _ => steady.itl_cdf(t.over, t.ms),
                };
                q - below
            }
        };
        if margin.is_nan() { f64::INFINITY } else { margin }
    }
}

/// The targets that apply to a role: a prefill replica makes no decode tokens and a decode
/// replica does no prefill, so each is sized on its own metric only (DESIGN §3).
fn constraints(role: Role, slo: &Slo) -> impl Iterator<Item = Constraint> {
    let ttft = match role {
        Role::Both | Role::Prefill => slo.ttft,
        Role::Decode => None,
    };
    let itl = match role {
        Role::Both | Role::Decode => slo.itl,
        Role::Prefill => None,
    };
    let ttft = ttft.map(|target| Constraint { limit: CapacityLimit::Ttft, target });
    let itl = itl.map(|target| Constraint { limit: CapacityLimit::Itl, target });
    ttft.into_iter().chain(itl)
}

/// The constraint with the largest signed margin at this steady state (`None` when no target
/// concerns the role).
fn worst_margin(role: Role, slo: &Slo, steady: &Steady<'_>) -> Option<(Constraint, f64)> {
    constraints(role, slo).map(|c| (c, c.margin(steady))).fold(None, |worst, (c, margin)| match worst {
        Some((_, m)) if m >= margin => worst,
        _ => Some((c, margin)),
    })
}

/// The most violated constraint at this steady state, if any.
fn worst_violation(role: Role, slo: &Slo, steady: &Steady<'_>) -> Option<(Constraint, f64)> {
    worst_margin(role, slo, steady).filter(|(_, margin)| *margin > 0.0)
}

/// Whether every target of `slo` that concerns the model's role is met at `rps`.
pub fn meets_slo(model: &ReplicaModel, slo: &Slo, rps: f64) -> bool {
    model.steady(rps).is_some_and(|s| worst_violation(model.role(), slo, &s).is_none())
}

/// The largest λ ∈ [0, max_utilization·λ*] whose role's TTFT and ITL statistics meet `slo`
/// (DESIGN §3 "Sizing").
///
/// Every statistic is non-decreasing in λ, so the feasible rates form an interval [0, λ*] and
/// a safeguarded regula falsi finds its end to 1e-4 relative (about 6 steady states, each
/// O(log B)), returning the feasible end on a fixed geometric grid. Targets met at the stability margin give the margin (`Stability`): a loose
/// target on a flat curve is met, not infeasible. A target a lone request already misses gives
/// rps 0 with the reason.
pub fn capacity_at_slo(model: &ReplicaModel, slo: &Slo, max_utilization: f64) -> Capacity {
    let role = model.role();
    if !(max_utilization > 0.0 && max_utilization < 1.0) {
        return Capacity::infeasible(
            CapacityLimit::Stability,
            format!("max utilization {max_utilization} is outside (0, 1)"),
        );
    }
    let max_rps = max_utilization * model.saturation_rps();
    if !(max_rps.is_finite() && max_rps > 0.0) {
        return Capacity::infeasible(
            CapacityLimit::Stability,
            format!("no positive sustainable rate ({max_rps} req/s)"),
        );
    }
    let Some(at_max) = model.steady(max_rps) else {
        return Capacity::infeasible(CapacityLimit::Stability, format!("no steady state at {max_rps} req/s"));
    };
    let Some((binding, _)) = worst_violation(role, slo, &at_max) else {
        return Capacity { rps: max_rps, limited_by: CapacityLimit::Stability, infeasible: None };
    };
    let Some(idle) = model.steady(0.0) else {
        return Capacity::infeasible(CapacityLimit::Stability, "no steady state".to_string());
    };
    if let Some((c, _)) = worst_violation(role, slo, &idle) {
        return Capacity::infeasible(
            c.limit,
            format!(
                "{} {} target {} ms is below the {:.1} ms a lone request needs",
                c.limit.as_str(),
                c.target.statistic.as_str(),
                c.target.ms,
                c.value_ms(&idle),
            ),
        );
    }

    // The answer is the largest rate of the grid max_rps·(1 + ε)^−k that meets every target, so
    // it is a function of feasibility alone (a looser target never gives less) at relative
    // resolution ε. Probes are grid points chosen by regula falsi on the worst signed margin
    // (Illinois: the end that stays twice is halved), every third a bisection: about 6 steady
    // states instead of bisection's 14. Invariant: k_lo meets every target (past the grid: 0
    // req/s, the lone request checked above), k_hi violates `binding`.
    let ln_step = RELATIVE_TOLERANCE.ln_1p();
    let grid_points = (30.0 / ln_step) as u32; // down to e^−30 of the margin
    let rate = |k: u32| if k > grid_points { 0.0 } else { max_rps * (-f64::from(k) * ln_step).exp() };
    let margin_at = |s: &Steady<'_>| worst_margin(role, slo, s).map_or(f64::NEG_INFINITY, |(_, m)| m);
    let (mut k_lo, mut k_hi, mut binding) = (grid_points + 1, 0_u32, binding);
    let (mut m_lo, mut m_hi) = (margin_at(&idle).min(0.0), margin_at(&at_max));
    let mut kept = 0_i8; // +1: the low end stayed last time, −1: the high end
    let mut probe = 0_u32;
    while k_lo - k_hi > 1 {
        let (lo, hi) = (rate(k_lo), rate(k_hi));
        let interpolate = probe % 3 != 2 && m_lo.is_finite() && m_hi.is_finite() && m_hi > m_lo;
        let guess = if interpolate { lo - m_lo * (hi - lo) / (m_hi - m_lo) } else { 0.5 * (lo + hi) };
        probe += 1;
        let k = if guess > 0.0 { (max_rps / guess).ln() / ln_step } else { f64::INFINITY };
        let k = (k.round().min(f64::from(grid_points + 1)) as u32).clamp(k_hi + 1, k_lo - 1);
        let worst = model.steady(rate(k)).and_then(|s| worst_margin(role, slo, &s)).unwrap_or((binding, f64::INFINITY));
        // No steady state cannot happen below the stability margin, but is never capacity.
        if worst.1 > 0.0 {
            (k_hi, m_hi, binding) = (k, worst.1, worst.0);
            if kept == 1 {
                m_lo *= 0.5;
            }
            kept = 1;
        } else {
            (k_lo, m_lo) = (k, worst.1);
            if kept == -1 {
                m_hi *= 0.5;
            }
            kept = -1;
        }
    }
    Capacity { rps: rate(k_lo), limited_by: binding.limit, infeasible: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::LatencyParams;
    use crate::analyze::queue::Workload;
    use proptest::prelude::*;

    const STATS: [Statistic; 5] = [Statistic::Mean, Statistic::P50, Statistic::P90, Statistic::P95, Statistic::P99];

    fn params(alpha_ms: f64, beta_ms: f64, gamma_ms: f64, delta_ms: f64) -> LatencyParams {
        LatencyParams { alpha_ms, beta_ms, gamma_ms, delta_ms, ..LatencyParams::default() }
    }

    fn model(p: LatencyParams, b: u32, role: Role, i: f64, o: f64) -> ReplicaModel {
        ReplicaModel::simple(p, b, role, Workload::constant(i, o))
    }

    fn target(ms: f64, statistic: Statistic) -> Option<Target> {
        Some(Target::new(ms, statistic))
    }

    fn llama70b(role: Role) -> ReplicaModel {
        model(params(29.56, 0.313, 11.3, 0.0909), 64, role, 1155.0, 211.0)
    }

    /// Every target that applies to the role is met at `rps`, checked on the reported statistics
    /// (quantiles by search, not the CDF test the sizing uses).
    fn meets(model: &ReplicaModel, slo: &Slo, rps: f64) -> bool {
        let m = model.analyze(rps).expect("stable");
        let ok = |t: Option<Target>, value: &dyn Fn(Target) -> f64| t.is_none_or(|t| value(t) <= t.ms * (1.0 + 1e-7));
        let ttft_applies = model.role() != Role::Decode;
        let itl_applies = model.role() != Role::Prefill;
        (!ttft_applies || ok(slo.ttft, &|t| m.ttft_ms(t.statistic)))
            && (!itl_applies || ok(slo.itl, &|t| m.itl_ms_over(t.statistic, t.over)))
    }

    #[test]
    fn flat_itl_curve_with_loose_target_is_met_at_the_stability_margin() {
        // B = 1: ITL(1) at every load. WVA called a loose target on a flat curve infeasible.
        let m = model(params(20.0, 0.5, 30.0, 0.1), 1, Role::Both, 500.0, 100.0);
        let slo = Slo { ttft: None, itl: target(40.0, Statistic::P99) };
        let c = capacity_at_slo(&m, &slo, 0.9);
        assert_eq!(c.rps, 0.9 * m.saturation_rps());
        assert_eq!(c.limited_by, CapacityLimit::Stability);
        assert_eq!(c.infeasible, None);
    }

    #[test]
    fn no_targets_plan_at_the_stability_margin() {
        let m = llama70b(Role::Both);
        let c = capacity_at_slo(&m, &Slo::default(), 0.8);
        assert_eq!(c.rps, 0.8 * m.saturation_rps());
        assert_eq!(c.limited_by, CapacityLimit::Stability);
    }

    #[test]
    fn binding_target_is_met_at_capacity_and_missed_just_above() {
        let m = llama70b(Role::Both);
        for slo in [
            Slo { ttft: target(400.0, Statistic::P90), itl: target(200.0, Statistic::Mean) },
            Slo { ttft: target(5000.0, Statistic::P90), itl: target(60.0, Statistic::Mean) },
        ] {
            let c = capacity_at_slo(&m, &slo, 0.95);
            let expected = if slo.itl.is_some_and(|t| t.ms < 100.0) { CapacityLimit::Itl } else { CapacityLimit::Ttft };
            assert_eq!(c.limited_by, expected);
            assert!(c.infeasible.is_none());
            assert!(c.rps > 0.0);
            assert!(meets(&m, &slo, c.rps));
            assert!(!meets(&m, &slo, c.rps * (1.0 + 2e-4)));
        }
    }

    #[test]
    fn decode_replica_is_sized_on_itl_only() {
        let m = llama70b(Role::Decode);
        let itl_only = Slo { ttft: None, itl: target(40.0, Statistic::Mean) };
        let c = capacity_at_slo(&m, &itl_only, 0.9);
        assert_eq!(c.limited_by, CapacityLimit::Itl);
        assert!(c.rps > 0.0 && c.rps < 0.9 * m.saturation_rps());
        assert!(m.analyze(c.rps).expect("stable").mean_itl_ms() <= 40.0);
        // An impossible TTFT target does not concern a decode replica.
        let with_ttft = Slo { ttft: target(1.0, Statistic::P99), ..itl_only };
        assert_eq!(capacity_at_slo(&m, &with_ttft, 0.9), c);
    }

    #[test]
    fn prefill_replica_is_sized_on_ttft_only() {
        let m = llama70b(Role::Prefill);
        let ttft_only = Slo { ttft: target(1000.0, Statistic::P95), itl: None };
        let c = capacity_at_slo(&m, &ttft_only, 0.9);
        assert_eq!(c.limited_by, CapacityLimit::Ttft);
        assert!(c.rps > 0.0 && c.rps < 0.9 * m.saturation_rps());
        assert!(m.analyze(c.rps).expect("stable").ttft_ms(Statistic::P95) <= 1000.0);
        // An impossible ITL target does not concern a prefill replica.
        let with_itl = Slo { itl: target(1.0, Statistic::Mean), ..ttft_only };
        assert_eq!(capacity_at_slo(&m, &with_itl, 0.9), c);
    }

    #[test]
    fn target_a_lone_request_misses_is_infeasible_with_the_reason() {
        // prefill(1) = 10 + 0.1862·1000 = 196.2 ms.
        let m = model(params(20.0, 0.5, 10.0, 0.1862), 32, Role::Both, 1000.0, 100.0);
        let slo = Slo { ttft: target(50.0, Statistic::P95), itl: target(100.0, Statistic::Mean) };
        let c = capacity_at_slo(&m, &slo, 0.9);
        assert_eq!(c.rps, 0.0);
        assert_eq!(c.limited_by, CapacityLimit::Ttft);
        assert_eq!(c.infeasible.as_deref(), Some("ttft p95 target 50 ms is below the 196.2 ms a lone request needs"));
        let slo = Slo { ttft: None, itl: target(15.0, Statistic::Mean) };
        let c = capacity_at_slo(&m, &slo, 0.9);
        assert_eq!(c.limited_by, CapacityLimit::Itl);
        assert_eq!(c.infeasible.as_deref(), Some("itl mean target 15 ms is below the 20.5 ms a lone request needs"));
    }

    #[test]
    fn max_utilization_outside_the_unit_interval_is_rejected() {
        let m = llama70b(Role::Both);
        for u in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
            let c = capacity_at_slo(&m, &Slo::default(), u);
            assert_eq!(c.rps, 0.0);
            assert!(c.infeasible.is_some());
        }
    }

    #[test]
    fn llama2_70b_on_h100_tp8_has_a_plausible_capacity() {
        let m = llama70b(Role::Both);
        // Saturation is the fixed point λ* = μ(B)(λ*): the other prompts' prefill work at λ*
        // stretches every step. Without it (λ → 0): δ·I = 104.99 ms per prompt, base(64) =
        // 29.56 + 0.313·64 = 49.59 ms, T(64) = 11.3 + 104.99 + 49.59 + 210·49.59 ≈ 10,580 ms,
        // μ(64) ≈ 6.05 req/s; the stalls take it down to about 3.7.
        let sat = m.saturation_rps();
        let mu_b = 64_000.0 / m.service_time_ms(64.0, sat);
        assert!((mu_b - sat).abs() < 1e-6 * sat, "{mu_b} vs {sat}");
        assert!(sat > 3.0 && sat < 4.5, "{sat}");
        let slo = Slo { ttft: target(2000.0, Statistic::P95), itl: target(80.0, Statistic::Mean) };
        let c = capacity_at_slo(&m, &slo, 0.9);
        assert!(c.infeasible.is_none());
        assert!(c.rps > 0.5 && c.rps < 10.0, "{c:?}");
        assert!(meets(&m, &slo, c.rps));
    }

    fn arb_model() -> impl Strategy<Value = ReplicaModel> {
        (
            (5.0..60.0f64, 0.0..2.0f64, 0.0..200.0f64, 0.001..0.5f64),
            (1.0..8000.0f64, 1.0..2000.0f64, 1u32..=512),
            prop_oneof![Just(Role::Both), Just(Role::Prefill), Just(Role::Decode)],
        )
            .prop_map(|((alpha, beta, gamma, delta), (i, o, b), role)| {
                model(params(alpha, beta, gamma, delta), b, role, i, o)
            })
    }

    fn arb_stat() -> impl Strategy<Value = Statistic> {
        proptest::sample::select(STATS.to_vec())
    }

    /// Targets relative to the idle latencies, so that all outcomes (infeasible, binding,
    /// stability) occur.
    fn slo_for(m: &ReplicaModel, ttft_factor: f64, itl_factor: f64, ts: Statistic, is: Statistic) -> Slo {
        let idle = m.analyze(0.0).expect("stable");
        Slo {
            ttft: target(idle.ttft_ms(ts).max(1.0) * ttft_factor, ts),
            itl: target(idle.itl_ms(is).max(1.0) * itl_factor, is),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn capacity_meets_its_targets_below_the_margin(
            m in arb_model(),
            ttft_factor in 0.8..20.0f64,
            itl_factor in 0.8..3.0f64,
            ts in arb_stat(),
            is in arb_stat(),
            max_utilization in 0.5..0.99f64,
        ) {
            let slo = slo_for(&m, ttft_factor, itl_factor, ts, is);
            let c = capacity_at_slo(&m, &slo, max_utilization);
            prop_assert!(c.rps >= 0.0);
            prop_assert!(c.rps <= max_utilization * m.saturation_rps());
            if c.infeasible.is_none() {
                prop_assert!(meets(&m, &slo, c.rps));
            } else {
                prop_assert_eq!(c.rps, 0.0);
            }
        }

        #[test]
        fn capacity_is_non_decreasing_in_the_target(
            m in arb_model(),
            f1 in 0.8..20.0f64,
            f2 in 0.8..20.0f64,
            itl_factor in 1.0..3.0f64,
            ts in arb_stat(),
            is in arb_stat(),
        ) {
            let (lo, hi) = (f1.min(f2), f1.max(f2));
            let tight = capacity_at_slo(&m, &slo_for(&m, lo, itl_factor, ts, is), 0.9);
            let loose = capacity_at_slo(&m, &slo_for(&m, hi, itl_factor, ts, is), 0.9);
            prop_assert!(tight.rps <= loose.rps, "{:?} > {:?}", tight, loose);
            let tight = capacity_at_slo(&m, &slo_for(&m, 20.0, lo.min(3.0), ts, is), 0.9);
            let loose = capacity_at_slo(&m, &slo_for(&m, 20.0, hi.min(3.0), ts, is), 0.9);
            prop_assert!(tight.rps <= loose.rps, "{:?} > {:?}", tight, loose);
        }
    }
}
