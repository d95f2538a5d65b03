//! TEMPORARY interface placeholder; replaced by the real sizing from branch wt-analyze.
use super::Statistic;
use super::queue::ReplicaModel;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    pub ms: f64,
    pub statistic: Statistic,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Slo {
    pub ttft: Option<Target>,
    pub itl: Option<Target>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapacityLimit {
    Ttft,
    Itl,
    Stability,
    Measured,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    pub rps: f64,
    pub limited_by: CapacityLimit,
    pub infeasible: Option<String>,
}

pub fn capacity_at_slo(model: &ReplicaModel, _slo: &Slo, max_utilization: f64) -> Capacity {
    Capacity { rps: model.saturation_rps() * max_utilization, limited_by: CapacityLimit::Stability, infeasible: None }
}
