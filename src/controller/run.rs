//! The periodic loop: observe → remember pending pods → decide (on a blocking thread: the solver
//! is CPU-bound) → apply (leader only) → publish. One tracing span per cycle carries the snapshot
//! id and outcome.
//!
//! The loop's state between cycles is explicit: the decision's [`Memory`] (the stabilizer's
//! history, calibration, forecasters, start-up times, activity) and the pending-pod memory
//! ([`PendingMemory`]); a decision is a function of the observation and that state. A
//! cycle starts at the interval, on a re-plan request, and at once when this replica becomes the
//! leader (a hand-over acts without waiting for the next tick).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{Instrument, field};

use super::memory::{Controls, Memory};
use super::state::Shared;
use super::{Cluster, ClusterError, Observed, decide};
use crate::observe::pending::{MemoryChange, PendingMemory};

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
    memory: impl Into<Memory>,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut interval = settings.interval;
    let mut stepper = Stepper::new(memory);
    loop {
        let is_leader = *leader.borrow_and_update();
        let tuned = stepper.cycle(&mut cluster, &shared, is_leader).await;
        if let Some(new) = tuned.filter(|&i| i != interval && !i.is_zero()) {
            tracing::info!(interval_s = new.as_secs_f64(), "cycle interval changed by configuration");
            interval = new;
        }
        if settings.max_cycles.is_some_and(|n| stepper.cycles() >= n) || *shutdown.borrow() {
            break;
        }
        let sleep = tokio::time::sleep(interval);
        tokio::pin!(sleep);
        let mut leader_open = true;
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = shared.replan_requested() => {
                    tracing::debug!("re-plan requested");
                    break;
                }
                changed = leader.changed(), if leader_open => match changed {
                    // A new leader acts at once instead of at its next tick; losing the lease
                    // needs no cycle (apply checks leadership itself).
                    Ok(()) if *leader.borrow_and_update() => {
                        tracing::info!("became the leader; planning and applying now");
                        break;
                    }
                    Ok(()) => {}
                    Err(_) => leader_open = false,
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The loop one cycle at a time, with the state it carries between cycles: what [`run`] does
/// between its timers, and what tests drive step by step.
pub struct Stepper {
    state: Option<LoopState>,
    cycle: u64,
}

impl Stepper {
    /// A loop with this memory (or just a stabilizer: default controls).
    pub fn new(memory: impl Into<Memory>) -> Self {
        Self {
            state: Some(LoopState {
                memory: memory.into(),
                pending: PendingMemory::default(),
                last_error: None,
                configured: None,
            }),
            cycle: 0,
        }
    }

    /// The decision's memory as it stands.
    pub fn memory(&self) -> &Memory {
        &self.state.as_ref().expect("the state is back after every cycle").memory
    }

    /// Cycles run so far.
    pub fn cycles(&self) -> u64 {
        self.cycle
    }

    /// The pending-pod memory as it stands.
    pub fn pending(&self) -> &PendingMemory {
        &self.state.as_ref().expect("the state is back after every cycle").pending
    }

    /// Run one cycle (observe, remember, decide, apply when `leader`, publish); returns the
    /// interval the cluster's configuration asks for, if any.
    pub async fn cycle<C: Cluster>(&mut self, cluster: &mut C, shared: &Arc<Shared>, leader: bool) -> Option<Duration> {
        self.cycle += 1;
        let cycle = self.cycle;
        let span = tracing::info_span!("cycle", cycle, snapshot_id = field::Empty, outcome = field::Empty);
        let state = self.state.take().expect("the state is back after every cycle");
        let (state, tuned) = run_cycle(cluster, shared, state, cycle, leader).instrument(span).await;
        self.state = Some(state);
        tuned
    }
}

/// What the loop carries from one cycle to the next.
struct LoopState {
    memory: Memory,
    pending: PendingMemory,
    /// The last observation error, to log a persisting one once rather than every cycle.
    last_error: Option<String>,
    /// The loop controls the configuration gave last (interval left out). Configuration changes
    /// the memory's controls when it changes, so a loop built with its own controls (a dry run,
    /// a test without calibration) keeps them until someone configures others.
    configured: Option<Controls>,
}

/// Fold the observation's pending-pod evidence into the memory and apply the memory to it: the
/// observation `decide` plans on. An observation without any full type is returned unchanged.
pub fn remember_pending(memory: &mut PendingMemory, observed: Observed) -> Result<Observed, ClusterError> {
    for change in memory.update(&observed.pending, observed.at_s) {
        match change {
            MemoryChange::Full { accelerator, variants } => {
                tracing::info!(accelerator = %accelerator, variants = ?variants, "accelerator type is full: pods are Unschedulable")
            }
            MemoryChange::Released { accelerator, reason } => {
                tracing::info!(accelerator = %accelerator, reason = %reason, "accelerator type no longer considered full")
            }
        }
    }
    let affected = observed.scenario.accelerators.iter().any(|a| memory.is_full(&a.name));
    if !affected {
        return Ok(observed);
    }
    let mut observed = observed;
    let notes = memory.shrink(&mut observed.scenario, &observed.pending);
    observed.snapshot =
        crate::scenario::validate(&observed.scenario).map_err(|e| ClusterError::InvalidSnapshot(e.to_string()))?;
    observed.warnings.extend(notes);
    Ok(observed)
}

/// One cycle; returns the loop state (moved through the blocking planner thread) and the interval
/// the cluster's configuration asks for, if any.
async fn run_cycle<C: Cluster>(
    cluster: &mut C,
    shared: &Arc<Shared>,
    mut state: LoopState,
    cycle: u64,
    leader: bool,
) -> (LoopState, Option<Duration>) {
    let span = tracing::Span::current();
    shared.set_leader(leader);
    let started = Instant::now();
    let observed = cluster.observe().await.and_then(|o| remember_pending(&mut state.pending, o));
    shared.metrics.set_configured(!matches!(observed, Err(ClusterError::NotConfigured(_))));
    let observed = match observed {
        Ok(o) => Arc::new(o),
        Err(e) => {
            let message = e.to_string();
            if state.last_error.as_deref() != Some(message.as_str()) {
                tracing::warn!(error = %message, kind = e.metric_label(), "observation failed; nothing planned or applied");
            } else {
                tracing::debug!(error = %message, kind = e.metric_label(), "observation still failing");
            }
            state.last_error = Some(message.clone());
            span.record("outcome", e.outcome());
            shared.metrics.record_cycle(e.outcome());
            shared.metrics.record_observe_error(&e);
            shared.fail(message);
            return (state, None);
        }
    };
    if state.last_error.take().is_some() {
        tracing::info!("observation succeeds again");
    }
    let LoopState { mut memory, pending, last_error, mut configured } = state;
    let tuned_interval = observed.tuning.as_ref().map(|t| t.interval);
    if let Some(tuning) = &observed.tuning {
        if &tuning.behavior != memory.stabilizer.behavior() {
            tracing::info!("scaling behavior changed by configuration");
            memory.stabilizer.set_behavior(tuning.behavior.clone());
        }
        if let Some(mut controls) = tuning.controls.clone() {
            // The interval is the loop's, not the configuration's: compare the rest.
            controls.interval_s = 0.0;
            let before = configured.clone().unwrap_or_else(|| Controls { interval_s: 0.0, ..Controls::default() });
            if controls != before {
                tracing::info!("loop controls changed by configuration");
                memory.controls = Controls { interval_s: memory.controls.interval_s, ..controls.clone() };
            }
            configured = Some(controls);
        }
        if !tuning.interval.is_zero() {
            memory.controls.interval_s = tuning.interval.as_secs_f64();
        }
    }
    let previous = shared.decision();
    // What a fresh memory keeps if the planner fails.
    let (behavior, controls) = (memory.stabilizer.behavior().clone(), memory.controls.clone());
    let planning = {
        let observed = observed.clone();
        tokio::task::spawn_blocking(move || {
            let decision = decide(&observed, previous.as_deref(), &mut memory, cycle);
            (decision, memory)
        })
    };
    let (decision, memory) = match planning.await {
        Ok(done) => done,
        Err(e) => {
            // The planner panicked: a bug. Keep running with a fresh history rather than dying.
            tracing::error!(error = %e, "planner task failed");
            span.record("outcome", "plan_error");
            shared.metrics.record_cycle("plan_error");
            shared.fail(format!("planner failed: {e}"));
            let memory = Memory::new(behavior).with_controls(controls);
            return (LoopState { memory, pending, last_error, configured }, tuned_interval);
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
            tracing::warn!(variant = %variant, error = %error, kind = error.metric_label(), "actuation failed");
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
    (LoopState { memory, pending, last_error, configured }, tuned_interval)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::controller::stabilize::Behavior;
    use crate::controller::testing::observed;
    use crate::controller::{Applied, ClusterError, Decision, Observed, Stabilizer, Tuning};

    /// A cluster that replays observations (an `Err` when they run out) and records what it
    /// was asked to apply.
    struct Replay {
        observations: VecDeque<Observed>,
        applied: Arc<Mutex<Vec<Vec<u32>>>>,
    }

    impl Cluster for Replay {
        async fn observe(&mut self) -> Result<Observed, ClusterError> {
            self.observations
                .pop_front()
                .ok_or_else(|| ClusterError::Unavailable("the API server is unreachable".into()))
        }

        async fn apply(&mut self, decision: &Decision) -> Applied {
            self.applied.lock().unwrap().push(decision.variants.iter().map(|v| v.desired).collect());
            Applied::default()
        }
    }

    async fn run_replay(observations: Vec<Observed>, cycles: u64, leader: bool) -> (Arc<Shared>, Vec<Vec<u32>>) {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let cluster = Replay { observations: observations.into(), applied: applied.clone() };
        let shared = Shared::new();
        let (_leader_tx, leader_rx) = watch::channel(leader);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let settings = LoopSettings { interval: Duration::from_millis(1), max_cycles: Some(cycles) };
        run(cluster, shared.clone(), settings, Stabilizer::default(), leader_rx, stop_rx).await;
        let applied = applied.lock().unwrap().clone();
        (shared, applied)
    }

    #[tokio::test]
    async fn a_follower_plans_and_publishes_but_never_applies() {
        let (shared, applied) = run_replay(vec![observed(8.0, 1, 1, 0.0)], 1, false).await;
        assert!(applied.is_empty());
        assert!(shared.decision().is_some());
        assert!(shared.metrics.encode().contains("allot_cycles_total{outcome=\"planned_as_follower\"} 1"));
    }

    #[tokio::test]
    async fn a_failed_observation_applies_nothing_and_keeps_the_last_decision() {
        let (shared, applied) = run_replay(vec![observed(8.0, 1, 1, 0.0)], 2, true).await;
        assert_eq!(applied.len(), 1, "only the observed cycle acted");
        let latest = shared.latest();
        assert!(latest.decision.is_some());
        assert!(latest.last_error.is_some_and(|e| e.contains("unreachable")));
    }

    #[tokio::test]
    async fn configuration_changes_the_behavior_without_a_restart() {
        let busy = observed(12.0, 0, 0, 0.0);
        // Load drops a minute later. With the default behavior the 300 s window holds replicas;
        // the configuration now says scale down at once.
        let quiet = |tuning: Option<Tuning>, running: &[u32]| {
            let mut o = observed(0.5, running[1], running[0], 60.0);
            o.tuning = tuning;
            o
        };
        let (_, first) = run_replay(vec![busy.clone()], 1, true).await;
        let running = first[0].clone();
        let (_, held) = run_replay(vec![busy.clone(), quiet(None, &running)], 2, true).await;
        assert_eq!(held[1], running, "the default window holds");
        let mut immediate = Behavior::default();
        immediate.scale_down.stabilization_window_seconds = 0;
        let tuning = Tuning { interval: Duration::from_millis(1), behavior: immediate, controls: None };
        let (_, tuned) = run_replay(vec![busy, quiet(Some(tuning), &running)], 2, true).await;
        assert!(tuned[1].iter().sum::<u32>() < running.iter().sum::<u32>(), "{tuned:?}");
    }

    #[tokio::test]
    async fn a_replica_that_becomes_leader_acts_at_once_not_at_its_next_tick() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let cluster = Replay { observations: vec![observed(8.0, 1, 1, 0.0); 3].into(), applied: applied.clone() };
        let shared = Shared::new();
        let (leader_tx, leader_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let settings = LoopSettings { interval: Duration::from_secs(3600), max_cycles: None };
        let task = tokio::spawn(run(cluster, shared.clone(), settings, Stabilizer::default(), leader_rx, stop_rx));
        tokio::time::timeout(Duration::from_secs(5), async {
            while shared.decision().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first cycle runs at start");
        assert!(applied.lock().unwrap().is_empty(), "a follower does not apply");
        leader_tx.send(true).expect("loop alive");
        tokio::time::timeout(Duration::from_secs(5), async {
            while applied.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("applied on acquiring, although the next tick is an hour away");
        stop_tx.send(true).expect("loop alive");
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("no panic");
    }

    /// The H100 type of `observed` with pods pending (`pending`) or not, held GPUs and nodes.
    fn with_evidence(mut o: Observed, pending: bool) -> Observed {
        use crate::observe::pending::{AcceleratorEvidence, PendingPod};
        let nodes: std::collections::BTreeMap<String, u32> = (0..4).map(|i| (format!("h100-{i}"), 4)).collect();
        let ev = AcceleratorEvidence {
            unschedulable: if pending {
                vec![PendingPod {
                    variant: "ns/chat-h100".into(),
                    pod: "ns/chat-h100-9".into(),
                    uid: "u9".into(),
                    gpus: 4,
                }]
            } else {
                vec![]
            },
            bound_uids: ["u1".to_string()].into_iter().collect(),
            held_gpus: 4,
            free_gpus: nodes.keys().map(|n| (n.clone(), 0)).collect(),
            node_gpus: nodes,
        };
        o.pending.accelerators.insert("H100-80GB".into(), ev);
        o.pending.accelerators.insert("A100-80GB".into(), Default::default());
        o.pending.memory_s = 600.0;
        o
    }

    #[tokio::test]
    async fn the_loop_remembers_a_full_type_after_its_pending_pod_is_gone() {
        // 30 req/s wants several H100 replicas; one H100 replica runs and one is pending.
        let first = with_evidence(observed(30.0, 1, 0, 0.0), true);
        let later = with_evidence(observed(30.0, 1, 0, 30.0), false);
        let cluster = Replay { observations: vec![first, later].into(), applied: Arc::new(Mutex::new(Vec::new())) };
        let mut cluster = cluster;
        let shared = Shared::new();
        let mut stepper = Stepper::new(Stabilizer::default());
        stepper.cycle(&mut cluster, &shared, true).await;
        let h100 = |shared: &Shared| {
            shared
                .latest()
                .observed
                .expect("observed")
                .snapshot
                .accelerators
                .iter()
                .find(|a| a.name == "H100-80GB")
                .map(|a| a.gpus)
        };
        assert_eq!(h100(&shared), Some(4), "full: only the GPUs held");
        stepper.cycle(&mut cluster, &shared, true).await;
        assert_eq!(h100(&shared), Some(4), "still full one cycle later, with no pod pending");
        assert!(stepper.pending().is_full("H100-80GB"));
        let decision = shared.decision().expect("decision");
        let h = decision.variants.iter().find(|v| v.name == "ns/chat-h100").expect("variant");
        assert!(h.desired <= 1, "{h:?}");
        let observed = shared.latest().observed.expect("observed");
        assert!(observed.warnings.iter().any(|w| w.contains("were Unschedulable")), "{:?}", observed.warnings);
    }
}
