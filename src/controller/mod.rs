//! The control loop (DESIGN §2: observe → analyze → optimize → act). Every cycle it observes a
//! cluster, plans with the core unchanged, damps the plan with HPA's behavior semantics and
//! applies it.
//!
//! The cluster is a trait, [`Cluster`], so one loop runs against Kubernetes and Prometheus
//! ([`crate::k8s`]) and against the simulator (`allot serve --simulate`, [`crate::sim::live`]).
//! [`decide`] is pure (a decision is a function of the observation, the previous decision and the
//! stabilizer's history); [`run`] owns the clock, the timers and the shared state the REST API and
//! the metrics read.

pub mod calibrate;
pub mod decide;
pub mod evidence;
pub mod forecast;
pub mod history;
pub mod memory;
pub mod run;
pub mod schedule;
pub mod stabilize;
pub mod state;
pub mod whatif;

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::analyze::Role;
use crate::observe::pending::PendingEvidence;
use crate::plan::Plan;
use crate::scenario::{Scenario, Snapshot};

pub use decide::decide;
pub use evidence::Evidence;
pub use memory::{Controls, Memory};
pub use stabilize::{Behavior, Stabilizer};
pub use state::Shared;

/// A cluster the loop can observe and act on.
pub trait Cluster: Send + 'static {
    /// Everything one cycle plans on. An error skips the cycle (nothing is applied).
    fn observe(&mut self) -> impl Future<Output = Result<Observed, ClusterError>> + Send;
    /// Carry out a decision (status, events, scaling). Returns what went wrong per variant
    /// without stopping at the first failure.
    fn apply(&mut self, decision: &Decision) -> impl Future<Output = Applied> + Send;
}

/// Why a cluster could not be observed this cycle. Each kind is a label of
/// `allot_observe_errors_total` ([`ClusterError::metric_label`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// The configuration is missing or invalid and no good one was ever read: the controller runs
    /// and serves, but does not act until it is fixed.
    #[error("not configured: {0}")]
    NotConfigured(String),
    /// The watch caches have not completed their first listing yet.
    #[error("not synced yet: {0}")]
    NotSynced(String),
    /// The API server (or the simulator) could not be reached or answered with an error.
    #[error("{0}")]
    Unavailable(String),
    /// The API server refused a read (RBAC).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// What was observed does not make a valid scenario (a bug or an impossible cluster).
    #[error("the observed cluster is not a valid scenario: {0}")]
    InvalidSnapshot(String),
    /// The source has nothing more to observe (a finished simulation).
    #[error("{0}")]
    Finished(String),
    /// There is no variant to plan (none defined, or every one is left out).
    #[error("nothing to plan: {0}")]
    NothingToPlan(String),
}

impl ClusterError {
    /// The `kind` label of `allot_observe_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ClusterError::NotConfigured(_) => "not_configured",
            ClusterError::NotSynced(_) => "not_synced",
            ClusterError::Unavailable(_) => "unavailable",
            ClusterError::Forbidden(_) => "forbidden",
            ClusterError::InvalidSnapshot(_) => "invalid_snapshot",
            ClusterError::Finished(_) => "finished",
            ClusterError::NothingToPlan(_) => "nothing_to_plan",
        }
    }

    /// The cycle outcome recorded in `allot_cycles_total`: not being configured is a state the
    /// operator fixes, not a failure of the loop.
    pub fn outcome(&self) -> &'static str {
        match self {
            ClusterError::NotConfigured(_) => "not_configured",
            ClusterError::NotSynced(_) => "not_synced",
            ClusterError::NothingToPlan(_) => "nothing_to_plan",
            _ => "observe_error",
        }
    }
}

/// What failed while applying one variant's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActError {
    pub kind: ActErrorKind,
    pub message: String,
}

/// Which write failed; the `kind` label of `allot_actuation_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActErrorKind {
    /// Patching the target's `scale` subresource (direct scaling).
    Scale,
    /// Writing the VariantAutoscaling's status.
    Status,
    /// Recording an Event.
    Event,
    /// The variant was not observed this cycle.
    NotObserved,
}

impl ActError {
    pub fn new(kind: ActErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    pub fn metric_label(&self) -> &'static str {
        match self.kind {
            ActErrorKind::Scale => "scale",
            ActErrorKind::Status => "status",
            ActErrorKind::Event => "event",
            ActErrorKind::NotObserved => "not_observed",
        }
    }
}

impl std::fmt::Display for ActError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.metric_label(), self.message)
    }
}

/// What one observation of the cluster found.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// When this was observed, seconds since the Unix epoch (simulated seconds in simulation):
    /// the clock of the stabilization windows.
    pub at_s: f64,
    /// The observed cluster in Allot's scenario format, load included: what `GET /v1/snapshot`
    /// returns and what live what-if overrides edit.
    pub scenario: Scenario,
    /// `scenario`, validated.
    pub snapshot: Snapshot,
    /// Pod states per variant, indexed like `snapshot.variants`.
    pub pods: Vec<PodCounts>,
    /// Models whose load metrics are missing, stale or failed to load, with the reason, by model
    /// name. Their variants are held (never scaled down on missing data).
    pub stale_models: BTreeMap<String, String>,
    /// Age of each model's newest load sample, seconds, by model name.
    pub metric_age_s: BTreeMap<String, f64>,
    /// Things left out or assumed while observing (skipped objects, configuration problems).
    pub warnings: Vec<String>,
    /// Loop settings the cluster's configuration asks for now (in Kubernetes, `allot-config`),
    /// applied from this cycle on without a restart; `None` keeps the loop's own.
    pub tuning: Option<Tuning>,
    /// What the scheduler says about room per accelerator, for the loop's pending-pod memory
    /// ([`crate::observe::pending`]); empty where nothing is pending (simulation, scenarios).
    pub pending: PendingEvidence,
    /// What the servers measured beyond the load: latency and saturation per variant, the
    /// gateway's queue, start-up times, a recorded calibration (empty where unknown).
    pub evidence: Evidence,
}

/// Loop settings that live in the cluster's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Tuning {
    pub interval: std::time::Duration,
    pub behavior: Behavior,
    /// Calibration, forecast, panic, scale to zero and schedules; `None` keeps the loop's own.
    pub controls: Option<Controls>,
}

impl Observed {
    /// A scenario observed as it says: its `current_replicas` all ready, its load fresh. For
    /// offline use (benchmarks, tests, replaying a scenario through the loop).
    pub fn from_scenario(scenario: Scenario, at_s: f64) -> Result<Self, crate::scenario::Invalid> {
        let snapshot = crate::scenario::validate(&scenario)?;
        let pods =
            snapshot.variants.iter().map(|v| PodCounts { ready: v.current_replicas, ..PodCounts::default() }).collect();
        Ok(Self {
            at_s,
            scenario,
            snapshot,
            pods,
            stale_models: BTreeMap::new(),
            metric_age_s: BTreeMap::new(),
            warnings: Vec::new(),
            tuning: None,
            pending: PendingEvidence::default(),
            evidence: Evidence::default(),
        })
    }
}

/// Replicas of one variant by pod state (DESIGN §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PodCounts {
    /// Serving.
    pub ready: u32,
    /// Scheduled and starting (image pull, model load): holds GPUs, serves soon.
    pub booting: u32,
    /// Pending because no node fits: holds no GPUs and will not serve until something changes.
    pub unschedulable: u32,
    /// Pending on scheduling gates (or not yet considered by the scheduler).
    pub gated: u32,
}

impl PodCounts {
    /// Replicas that hold GPUs: ready and booting.
    pub fn current(&self) -> u32 {
        self.ready + self.booting
    }
}

/// One cycle's outcome: the plan and what each variant should run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// Counts cycles since the controller started.
    pub cycle: u64,
    /// A digest of the snapshot planned on: equal snapshots give equal ids.
    pub snapshot_id: String,
    /// When the cycle observed, seconds since the Unix epoch (simulated seconds in simulation).
    pub observed_at_s: f64,
    pub plan: Plan,
    /// Sorted by variant name.
    pub variants: Vec<VariantDecision>,
    /// Models held at their replicas because their metrics were missing or stale, with the reason.
    pub held_models: BTreeMap<String, String>,
    /// Per model: the load forecast at the time a replica started now would be ready, and what
    /// the plan sized for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forecasts: BTreeMap<String, forecast::Forecast>,
    /// Models in panic mode (observed latency far over the SLO: no scale-down, scale-ups
    /// without windows or rate limits), with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub panic: BTreeMap<String, String>,
    /// Whether any variant's desired replicas differ from the previous decision.
    pub changed: bool,
    /// What the cycle planned on before stabilization, for what-if plans; not serialized.
    #[serde(skip)]
    pub basis: Option<std::sync::Arc<decide::PlanBasis>>,
}

/// What one variant should run, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VariantDecision {
    /// `namespace/name` for Kubernetes variants.
    pub name: String,
    pub model: String,
    pub accelerator: String,
    pub role: Role,
    pub pods: PodCounts,
    /// Replicas holding GPUs now (ready + booting).
    pub current: u32,
    /// The optimizer's replicas.
    pub planned: u32,
    /// What to run: planned, then held or stabilized.
    pub desired: u32,
    /// Why `desired` differs from `planned`, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The correction of the variant's latency profile the plan used and what this cycle's
    /// observation said about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<calibrate::CalibrationReport>,
}

impl VariantDecision {
    /// The Kubernetes namespace and object name.
    pub fn namespace_and_name(&self) -> (&str, &str) {
        namespace_and_name(&self.name)
    }
}

/// Split `namespace/name`; a name without a namespace (offline scenarios, the simulator) is in
/// `default`, as an object created without one would be — Prometheus drops empty labels, and the
/// HPA/KEDA examples select on `namespace`.
pub fn namespace_and_name(variant: &str) -> (&str, &str) {
    variant.split_once('/').unwrap_or(("default", variant))
}

/// What applying a decision did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Variants whose target was scaled.
    pub scaled: Vec<String>,
    /// (variant, what failed): one failure does not stop the others.
    pub errors: Vec<(String, ActError)>,
}

/// Observations for unit tests of the loop and the metrics.
#[cfg(test)]
pub(crate) mod testing {
    use super::Observed;
    use crate::scenario::parse;

    /// Two variants of model `chat` (A100 and H100, TP4) with `rps` of premium load and these
    /// replicas running, observed at `at_s`.
    pub(crate) fn observed(rps: f64, h100_running: u32, a100_running: u32, at_s: f64) -> Observed {
        let text = format!(
            "accelerators:
  - {{ name: A100-80GB, gpus: 16, cost_usd_per_gpu_hour: 2.21 }}
  - {{ name: H100-80GB, gpus: 16, cost_usd_per_gpu_hour: 4.25 }}
service_classes:
  - name: premium
    priority: 1
    targets: [{{ model: chat, ttft: {{ ms: 2000, statistic: p95 }}, itl: {{ ms: 60 }} }}]
load:
  - {{ model: chat, class: premium, arrival_rate_rps: {rps}, input_tokens: 1155, output_tokens: 211 }}
variants:
  - {{ name: ns/chat-a100, model: chat, accelerator: A100-80GB, gpus_per_replica: 4, max_batch: 64, current_replicas: {a100_running}, profile: llama2-70b/a100-80gb/tp4 }}
  - {{ name: ns/chat-h100, model: chat, accelerator: H100-80GB, gpus_per_replica: 4, max_batch: 64, current_replicas: {h100_running}, profile: llama2-70b/h100-80gb/tp4 }}
"
        );
        Observed::from_scenario(parse(&text).expect("parses"), at_s).expect("valid")
    }
}
