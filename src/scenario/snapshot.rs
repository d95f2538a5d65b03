//! The validated snapshot the core plans on. Built only by [`super::validate`]: every name is
//! resolved to an index, every number is finite and in range, every list is sorted by name.

use std::collections::BTreeMap;

use crate::analyze::capacity::Slo;
use crate::analyze::engine::EngineLimits;
use crate::analyze::queue::Workload;
use crate::analyze::{LatencyParams, Role};

/// One cluster state (or what-if): what the optimizer sees.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub name: Option<String>,
    /// Sorted by name.
    pub accelerators: Vec<Accelerator>,
    /// Sorted by name.
    pub classes: Vec<ServiceClass>,
    /// Every model some variant serves, sorted by name.
    pub models: Vec<Model>,
    /// Sorted by name.
    pub variants: Vec<Variant>,
    pub settings: Settings,
    /// Non-fatal findings of validation (shown with the plan).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Accelerator {
    pub name: String,
    pub device: Option<String>,
    pub gpus: u32,
    pub cost_usd_per_gpu_hour: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceClass {
    pub name: String,
    /// Smaller is more important.
    pub priority: u32,
    pub weight: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: String,
    /// Demand per class, sorted by class index; only classes with a target for this model.
    pub demands: Vec<Demand>,
    /// Bounds on prefill/decode replicas, for models with disaggregated variants.
    pub pd_ratio: Option<PdRatio>,
    /// Fewest replicas over all the model's variants together (0: none).
    pub min_replicas: u32,
}

/// Load and SLO of one (model, class).
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    /// Index into [`Snapshot::classes`].
    pub class: usize,
    pub arrival_rps: f64,
    pub workload: Workload,
    pub slo: Slo,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PdRatio {
    pub min: f64,
    pub max: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub name: String,
    /// Index into [`Snapshot::models`].
    pub model: usize,
    /// Index into [`Snapshot::accelerators`].
    pub accelerator: usize,
    pub gpus_per_replica: u32,
    pub role: Role,
    /// `max_num_seqs`; the engine's other limits are in `engine`.
    pub max_batch: u32,
    /// The engine's limits (variant settings over the profile's over vLLM's defaults).
    pub engine: EngineLimits,
    pub min_replicas: u32,
    /// Already capped by what the inventory could ever hold.
    pub max_replicas: u32,
    pub current_replicas: u32,
    /// The latency profile, when one is given.
    pub profile: Option<NamedProfile>,
    /// Measured capacity per class index, req/s per replica; wins over the profile.
    pub measured_capacity_rps: BTreeMap<usize, f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NamedProfile {
    pub name: String,
    pub params: LatencyParams,
}

/// Transition costs as fractions of a replica's hourly cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransitionCosts {
    pub replica_change_fraction: f64,
    pub accelerator_move_fraction: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub time_limit_s: f64,
    pub mip_gap: f64,
    pub max_utilization: f64,
    pub transition: TransitionCosts,
    pub routing: crate::scenario::format::RoutingSpec,
}

impl Variant {
    /// Hourly cost of one replica.
    pub fn replica_cost_usd_per_hour(&self, accelerators: &[Accelerator]) -> f64 {
        f64::from(self.gpus_per_replica) * accelerators[self.accelerator].cost_usd_per_gpu_hour
    }
}

impl Snapshot {
    /// The same cluster with no models or variants (accelerators, classes and settings kept), to
    /// build a sub-problem from.
    pub fn clone_without_models_and_variants(&self) -> Snapshot {
        Snapshot {
            name: self.name.clone(),
            accelerators: self.accelerators.clone(),
            classes: self.classes.clone(),
            models: Vec::new(),
            variants: Vec::new(),
            settings: self.settings.clone(),
            warnings: Vec::new(),
        }
    }
}

impl Snapshot {
    /// Indices of the variants of model `model` in role `role`.
    pub fn variants_in_role(&self, model: usize, role: Role) -> impl Iterator<Item = usize> + '_ {
        self.variants.iter().enumerate().filter(move |(_, v)| v.model == model && v.role == role).map(|(i, _)| i)
    }
}
