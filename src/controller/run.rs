//! The periodic loop: observe → decide (on a blocking thread: the solver is CPU-bound) → apply
//! (leader only) → publish. One tracing span per cycle carries the snapshot id and outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{Instrument, field};

use super::state::Shared;
use super::{Cluster, Stabilizer, decide};

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct LoopSettings {
    /// Wall time between cycles (a re-plan request starts one early).
    pub interval: Duration,
    /// Stop after this many cycles (tests, `--cycles`); `None` runs until shutdown.
    pub max_cycles: Option<u64>,
}

/// Run cycles until `shutdown` turns true (or `max_cycles` ran). Acts only while `leader` is true.
pub async fn run<C: Cluster>(
    mut cluster: C,
    shared: Arc<Shared>,
    settings: LoopSettings,
    mut stabilizer: Stabilizer,
    leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut cycle: u64 = 0;
    loop {
        cycle += 1;
        let span = tracing::info_span!("cycle", cycle, snapshot_id = field::Empty, outcome = field::Empty);
        let is_leader = *leader.borrow();
        stabilizer = run_cycle(&mut cluster, &shared, stabilizer, cycle, is_leader).instrument(span).await;
        if settings.max_cycles.is_some_and(|n| cycle >= n) || *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.interval) => {}
            _ = shared.replan_requested() => tracing::debug!("re-plan requested"),
            _ = shutdown.changed() => break,
        }
    }
}

/// One cycle; returns the stabilizer (moved through the blocking planner thread).
async fn run_cycle<C: Cluster>(
    cluster: &mut C,
    shared: &Arc<Shared>,
    mut stabilizer: Stabilizer,
    cycle: u64,
    leader: bool,
) -> Stabilizer {
    let span = tracing::Span::current();
    shared.set_leader(leader);
    let started = Instant::now();
    let observed = match cluster.observe().await {
        Ok(o) => Arc::new(o),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(error = %message, "observation failed; nothing planned or applied");
            span.record("outcome", "observe_error");
            shared.metrics.record_cycle("observe_error");
            shared.fail(message);
            return stabilizer;
        }
    };
    let previous = shared.decision();
    let planning = {
        let observed = observed.clone();
        tokio::task::spawn_blocking(move || {
            let decision = decide(&observed, previous.as_deref(), &mut stabilizer, cycle);
            (decision, stabilizer)
        })
    };
    let (decision, stabilizer) = match planning.await {
        Ok(done) => done,
        Err(e) => {
            // The planner panicked: a bug. Keep running with a fresh history rather than dying.
            tracing::error!(error = %e, "planner task failed");
            span.record("outcome", "plan_error");
            shared.metrics.record_cycle("plan_error");
            shared.fail(format!("planner failed: {e}"));
            return Stabilizer::default();
        }
    };
    span.record("snapshot_id", decision.snapshot_id.as_str());
    let decision = Arc::new(decision);
    shared.metrics.record_decision(&observed, &decision, started.elapsed().as_secs_f64());
    if decision.changed {
        let changes: Vec<String> = decision
            .variants
            .iter()
            .filter(|v| v.desired != v.current)
            .map(|v| format!("{} {}→{}", v.name, v.current, v.desired))
            .collect();
        tracing::info!(status = ?decision.plan.status, mode = ?decision.plan.mode, changes = ?changes, "plan changed");
    }
    let outcome = if leader {
        let applied = cluster.apply(&decision).await;
        for (variant, error) in &applied.errors {
            tracing::warn!(variant = %variant, error = %error, "actuation failed");
        }
        shared.metrics.record_applied(&applied);
        if applied.errors.is_empty() { "applied" } else { "applied_with_errors" }
    } else {
        "planned_as_follower"
    };
    span.record("outcome", outcome);
    shared.metrics.record_cycle(outcome);
    tracing::info!(
        status = ?decision.plan.status,
        cost_usd_per_hour = decision.plan.cost_usd_per_hour,
        held_models = decision.held_models.len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "cycle done"
    );
    shared.publish(observed, decision);
    stabilizer
}
