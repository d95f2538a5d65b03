//! The plan: Allot's machine interface (`allot plan --format json`, `POST /v1/plans`).
//!
//! Field names carry units. Lists are sorted by name so equal snapshots give equal documents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analyze::{Role, Statistic};

/// Replicas per variant, what they are predicted to achieve, what it costs and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    /// The scenario's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
    /// Outcome of the solve.
    pub status: PlanStatus,
    /// Whether every demand is served or GPUs ran out.
    pub mode: PlanMode,
    /// Wall time of all solver phases, milliseconds.
    pub solve_ms: f64,
    /// The largest relative MIP gap of the optimizing phases (0 when all are proven optimal);
    /// each fair-share tier's gap on its level is in `tiers`.
    pub mip_gap: f64,
    /// Cost plus transition cost of the plan, USD per hour (what the final phase minimizes).
    pub objective: f64,
    /// Hourly cost of the planned replicas.
    pub cost_usd_per_hour: f64,
    /// Hourly cost of the current replicas.
    pub current_cost_usd_per_hour: f64,
    /// Transition cost charged in the objective for changing from the current replicas.
    pub transition_cost_usd_per_hour: f64,
    /// Sorted by name.
    pub variants: Vec<VariantPlan>,
    /// One entry per (model, class) with demand, sorted by model then class.
    pub models: Vec<ModelPlan>,
    /// GPU use per accelerator type, sorted by name.
    pub accelerators: Vec<AcceleratorPlan>,
    /// Constraints that shape this plan.
    pub binding: Vec<Binding>,
    /// Things a reader should know (fallbacks, extrapolations, infeasible targets).
    pub warnings: Vec<String>,
    /// Each solver phase, in order.
    pub phases: Vec<PhaseReport>,
    /// The fair-share tiers (only when GPUs ran out), most important first: the level reached,
    /// the proven bound and the search's work.
    #[serde(default)]
    pub tiers: Vec<TierReport>,
    /// The check that no free GPU could serve unmet demand, and what it fixed.
    #[serde(default)]
    pub idle_check: IdleCheck,
}

impl Plan {
    /// Per (model, class): the share of its demand planned onto variants predicted to meet the
    /// class's SLO (1 without demand); `allot_predicted_slo_attainment_ratio`.
    pub fn predicted_attainment(&self) -> BTreeMap<(String, String), f64> {
        let mut met_rps: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        for v in &self.variants {
            let Some(prediction) = &v.predicted else { continue };
            for check in prediction.slo.iter().filter(|c| c.met) {
                let load = v.load_by_class_rps.get(&check.class).copied().unwrap_or(0.0);
                *met_rps.entry((v.model.as_str(), check.class.as_str())).or_default() += load;
            }
        }
        self.models
            .iter()
            .map(|m| {
                let met = met_rps.get(&(m.name.as_str(), m.class.as_str())).copied().unwrap_or(0.0);
                let share = if m.demand_rps > 0.0 { (met / m.demand_rps).min(1.0) } else { 1.0 };
                ((m.name.clone(), m.class.clone()), share)
            })
            .collect()
    }
}

/// Outcome of a plan's solve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Every phase proved optimal (to HiGHS's tolerances).
    Optimal,
    /// Every phase stopped within the configured MIP gap.
    GapLimit,
    /// A deterministic work limit (nodes, probes) stopped a phase before its proof; the plan is
    /// the best found, with the gaps reported.
    WorkLimit,
    /// A phase hit the wall-clock limit; the plan is HiGHS's best incumbent (and depends on the
    /// machine's speed: a warning says so).
    TimeLimit,
    /// No solution was found in time; the plan keeps the current replicas.
    Fallback,
}

/// Whether the plan serves all demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    /// Every demand is served at its SLO; the plan is the cheapest such.
    AllServed,
    /// GPUs ran out: served fractions were maximized tier by tier (priority order, max-min fair).
    FairShare,
    /// There is load, but no variant can serve any of it (no capacity at the SLO, or no room in
    /// the inventory): the plan holds only the minimum replicas, and the warnings say why.
    NothingServable,
}

/// Plan of one variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VariantPlan {
    pub name: String,
    pub model: String,
    pub accelerator: String,
    pub role: Role,
    pub gpus_per_replica: u32,
    pub current_replicas: u32,
    /// Desired replicas.
    pub replicas: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Capacity of one replica at each class's SLO, req/s.
    pub capacity_rps: BTreeMap<String, f64>,
    /// Traffic routed to this variant, all replicas together, req/s.
    pub load_rps: f64,
    /// The same per class.
    pub load_by_class_rps: BTreeMap<String, f64>,
    /// Predicted latency at the planned load; absent without replicas or without a profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<Prediction>,
    /// Hourly cost of the desired replicas.
    pub cost_usd_per_hour: f64,
}

/// Predicted behaviour of one replica of a variant under its planned share of the load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Prediction {
    /// Load per replica over its saturation throughput.
    pub utilization: f64,
    /// Load per replica over its capacity at the SLO (1 = exactly at the SLO limit).
    pub slo_capacity_used: f64,
    /// Mean time to first token, ms (absent for decode replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Mean inter-token latency, ms (absent for prefill replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_ms: Option<f64>,
    /// The SLO statistics each class asks for, predicted against their targets.
    pub slo: Vec<SloCheck>,
}

/// Predicted latency of one class against its targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SloCheck {
    pub class: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<TargetCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl: Option<TargetCheck>,
    /// Whether every predicted statistic meets its target.
    pub met: bool,
}

/// One statistic predicted against its target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TargetCheck {
    pub statistic: Statistic,
    pub predicted_ms: f64,
    pub target_ms: f64,
}

/// Demand and service of one (model, class).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelPlan {
    pub name: String,
    pub class: String,
    pub priority: u32,
    pub demand_rps: f64,
    pub served_rps: f64,
    pub served_fraction: f64,
    pub unmet_rps: f64,
}

/// GPU use of one accelerator type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AcceleratorPlan {
    pub name: String,
    pub available_gpus: u32,
    pub current_gpus: u32,
    pub used_gpus: u32,
    pub free_gpus: u32,
    pub cost_usd_per_hour: f64,
}

/// A constraint that shapes the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Binding {
    /// No further replica of any variant fits on this accelerator type.
    InventoryExhausted { accelerator: String, used_gpus: u32, available_gpus: u32 },
    /// Part of a demand is not served.
    DemandUnmet { model: String, class: String, unmet_rps: f64, served_fraction: f64 },
    /// No variant of the model can meet the class's SLO at any load.
    NoFeasibleVariant { model: String, class: String, reasons: Vec<String> },
    /// A variant sits at its configured replica bound while carrying load.
    MaxReplicas { variant: String, replicas: u32 },
    /// A variant is held at its minimum although it carries no load.
    MinReplicas { variant: String, replicas: u32 },
    /// A disaggregated model's prefill/decode replica ratio sits at a bound.
    PdRatio { model: String, bound: String, prefill_replicas: u32, decode_replicas: u32 },
    /// The model's replicas were chosen so that a least-loaded router, which spreads requests
    /// by occupancy rather than by the plan's rates, keeps every variant within its capacity at
    /// the SLO (`optimizer.routing: least_loaded`); this much dearer than the plan's own split.
    LeastLoadedRouting { model: String, extra_cost_usd_per_hour: f64 },
}

/// One solver phase (DESIGN §4's lexicographic objective).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhaseReport {
    /// `serve_all_by_model`, `serve_all`, `fair_share_priority_<p>: …` (the search's bound,
    /// probes and routing LPs), `served_priority_<p>` or `cost`.
    pub name: String,
    /// HiGHS's model status, in its words.
    pub solver_status: String,
    /// What the phase's outcome means for the plan (as the plan's own `status`).
    #[serde(default = "optimal")]
    pub status: PlanStatus,
    pub solve_ms: f64,
    pub mip_gap: f64,
    pub objective: f64,
    /// Branch-and-bound nodes explored.
    #[serde(default)]
    pub nodes: i64,
}

fn optimal() -> PlanStatus {
    PlanStatus::Optimal
}

/// The fair share of one priority tier: t = min over its demands of served fraction / weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TierReport {
    pub priority: u32,
    /// The level t the plan gives the tier.
    pub min_served_fraction: f64,
    /// Proven: no plan gives every demand of the tier more than this (with the earlier tiers'
    /// floors).
    pub upper_bound: f64,
    /// upper_bound − min_served_fraction: how far the level may be from the optimum.
    pub gap: f64,
    /// Fixed-level probes the search ran.
    pub probes: u32,
    /// Probes stopped by their node limit before an answer.
    pub unresolved_probes: u32,
    /// Whether the gap is within the search's tolerance.
    pub proven: bool,
}

/// The post-check of a fair-share plan: for every demand with unmet load, could one more
/// replica of one of its variants fit the free GPUs and serve more, lowering no one?
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IdleCheck {
    /// Whether the check ran (fair-share plans only: otherwise nothing is unmet).
    pub checked: bool,
    /// Replicas the check added, each serving demand that was unmet.
    pub replicas_added: u32,
    /// Served traffic those replicas added, req/s.
    pub served_added_rps: f64,
}
