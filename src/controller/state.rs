//! What the loop shares with the REST API and the metrics endpoint: the latest observation and
//! decision, the recent cycles, leadership, and a way to ask for a prompt re-plan.

use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use super::history::History;
use super::{Decision, Observed};
use crate::telemetry::Metrics;

/// The controller's published state. Readers get `Arc`s: a slow HTTP client never blocks a cycle.
#[derive(Default)]
pub struct Shared {
    latest: RwLock<Latest>,
    pub metrics: Metrics,
    /// The recent cycles (`GET /v1/history`, the console's charts).
    pub history: Arc<History>,
    replan: Notify,
}

/// The newest results of the loop.
#[derive(Clone, Debug, Default)]
pub struct Latest {
    pub observed: Option<Arc<Observed>>,
    pub decision: Option<Arc<Decision>>,
    /// Why the last cycle did not plan (observation failed), if it did not.
    pub last_error: Option<String>,
    /// Whether this replica acts (holds the lease); followers plan and serve read-only.
    pub leader: bool,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A copy of the latest state.
    pub fn latest(&self) -> Latest {
        self.latest.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn decision(&self) -> Option<Arc<Decision>> {
        self.latest().decision
    }

    pub(super) fn publish(&self, observed: Arc<Observed>, decision: Arc<Decision>) {
        self.history.record(&observed, &decision);
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        latest.observed = Some(observed);
        latest.decision = Some(decision);
        latest.last_error = None;
    }

    pub(super) fn fail(&self, error: String) {
        self.latest.write().unwrap_or_else(|e| e.into_inner()).last_error = Some(error);
    }

    pub fn set_leader(&self, leader: bool) {
        self.latest.write().unwrap_or_else(|e| e.into_inner()).leader = leader;
        self.metrics.set_leader(leader);
    }

    /// Ask for a cycle now (variants or configuration changed) instead of at the next tick.
    pub fn request_replan(&self) {
        self.replan.notify_one();
    }

    pub(super) async fn replan_requested(&self) {
        self.replan.notified().await;
    }
}
