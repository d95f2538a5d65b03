//! TEMPORARY interface placeholder; replaced by the real model from branch wt-analyze.
use super::{LatencyParams, Role, Statistic};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    pub input_tokens: f64,
    pub output_tokens: f64,
}

#[derive(Clone, Debug)]
pub struct ReplicaModel {
    params: LatencyParams,
    max_batch: u32,
    role: Role,
    workload: Workload,
}

#[derive(Clone, Debug)]
pub struct QueueMetrics {
    pub arrival_rps: f64,
    pub utilization: f64,
    ttft: f64,
    itl: f64,
}

impl QueueMetrics {
    pub fn ttft_ms(&self, _s: Statistic) -> f64 {
        self.ttft
    }
    pub fn itl_ms(&self, _s: Statistic) -> f64 {
        self.itl
    }
}

impl ReplicaModel {
    pub fn new(params: LatencyParams, max_batch: u32, role: Role, workload: Workload) -> Self {
        Self { params, max_batch, role, workload }
    }
    pub fn saturation_rps(&self) -> f64 {
        let b = f64::from(self.max_batch);
        let p = &self.params;
        let t = p.gamma_ms + p.delta_ms * self.workload.input_tokens * b + (self.workload.output_tokens - 1.0) * (p.alpha_ms + p.beta_ms * b);
        let _ = self.role;
        1000.0 * b / t
    }
    pub fn analyze(&self, arrival_rps: f64) -> Option<QueueMetrics> {
        let mu = self.saturation_rps();
        (arrival_rps < mu).then(|| QueueMetrics { arrival_rps, utilization: arrival_rps / mu, ttft: self.params.gamma_ms, itl: self.params.alpha_ms })
    }
}
