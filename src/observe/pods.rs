//! Pod states of a managed variant (DESIGN §5): every pod is ready, booting, unschedulable or
//! gated, and only the first two are capacity. Pure functions over k8s-openapi types; the clock
//! comes in as an argument.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// What one pod of a variant contributes.
#[derive(Clone, Debug, PartialEq)]
pub enum PodState {
    /// Ready: serving traffic.
    Ready,
    /// Scheduled (or not yet seen by the scheduler) but not ready: image pull, model load. Capacity
    /// that is arriving.
    Booting(Booting),
    /// The scheduler found no node (`PodScheduled=False`, reason `Unschedulable`): not capacity,
    /// and a sign the accelerator type is full.
    Unschedulable {
        /// Seconds since the scheduler first said so.
        for_s: f64,
        /// The scheduler's explanation (`0/12 nodes are available: 12 Insufficient nvidia.com/gpu`).
        message: String,
    },
    /// Held by scheduling gates (a queue such as Kueue, quota): not capacity, says nothing about
    /// free GPUs.
    Gated { gates: Vec<String> },
    /// Being deleted, or finished (`Succeeded`/`Failed`): not counted at all.
    Gone,
}

/// A booting pod with its progress against the variant's expected start-up time.
#[derive(Clone, Debug, PartialEq)]
pub struct Booting {
    pub pod: String,
    /// Whether a node was assigned (false: the scheduler has not decided yet).
    pub scheduled: bool,
    /// Seconds since scheduling (or creation, before scheduling).
    pub age_s: f64,
    /// Seconds until it is expected to serve; `None` without a `startupSeconds`. 0 when overdue.
    pub eta_s: Option<f64>,
    /// Older than the expected start-up time.
    pub overdue: bool,
}

/// Counts of a variant's pods by state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariantPods {
    pub ready: u32,
    /// Sorted by pod name.
    pub booting: Vec<Booting>,
    pub unschedulable: u32,
    /// Longest time any pod has been unschedulable, seconds (0 without such pods).
    pub unschedulable_for_s: f64,
    /// The scheduler's message for the longest-unschedulable pod.
    pub unschedulable_message: Option<String>,
    pub gated: u32,
}

impl VariantPods {
    /// Replicas that are or will be capacity: ready plus booting (never unschedulable or gated).
    pub fn current_replicas(&self) -> u32 {
        self.ready + self.booting.len() as u32
    }

    /// Whether some pod has been unschedulable for at least `grace_s` seconds.
    pub fn unschedulable_beyond(&self, grace_s: f64) -> bool {
        self.unschedulable > 0 && self.unschedulable_for_s >= grace_s
    }
}

/// Seconds from `from` to `now`, never negative (clock skew between nodes and Allot).
fn seconds_since(now: Timestamp, from: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<f64> {
    from.map(|t| now.duration_since(t.0).as_secs_f64().max(0.0))
}

/// Classify one pod. `startup_s` is the variant's expected start-up time (`spec.startupSeconds`).
pub fn classify(pod: &Pod, now: Timestamp, startup_s: Option<u32>) -> PodState {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if pod.metadata.deletion_timestamp.is_some() || matches!(phase, "Succeeded" | "Failed") {
        return PodState::Gone;
    }
    let gates: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .into_iter()
        .flatten()
        .map(|g| g.name.clone())
        .collect();
    if !gates.is_empty() {
        return PodState::Gated { gates };
    }
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let condition = |kind: &str| conditions.iter().find(|c| c.type_ == kind);
    if condition("Ready").is_some_and(|c| c.status == "True") {
        return PodState::Ready;
    }
    let scheduled_condition = condition("PodScheduled");
    if let Some(c) = scheduled_condition
        && c.status == "False"
        && c.reason.as_deref() == Some("Unschedulable")
    {
        return PodState::Unschedulable {
            for_s: seconds_since(now, c.last_transition_time.as_ref())
                .or_else(|| seconds_since(now, pod.metadata.creation_timestamp.as_ref()))
                .unwrap_or(0.0),
            message: c.message.clone().unwrap_or_default(),
        };
    }
    let node_assigned = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    let scheduled = node_assigned || scheduled_condition.is_some_and(|c| c.status == "True");
    let since = scheduled_condition
        .filter(|c| c.status == "True")
        .and_then(|c| seconds_since(now, c.last_transition_time.as_ref()))
        .or_else(|| seconds_since(now, pod.metadata.creation_timestamp.as_ref()))
        .unwrap_or(0.0);
    let expected = startup_s.map(f64::from);
    PodState::Booting(Booting {
        pod: name,
        scheduled,
        age_s: since,
        eta_s: expected.map(|e| (e - since).max(0.0)),
        overdue: expected.is_some_and(|e| since > e),
    })
}

/// Classify all pods of one variant.
pub fn summarize(pods: &[Pod], now: Timestamp, startup_s: Option<u32>) -> VariantPods {
    let mut out = VariantPods::default();
    for pod in pods {
        match classify(pod, now, startup_s) {
            PodState::Ready => out.ready += 1,
            PodState::Booting(b) => out.booting.push(b),
            PodState::Unschedulable { for_s, message } => {
                out.unschedulable += 1;
                if out.unschedulable_message.is_none() || for_s > out.unschedulable_for_s {
                    out.unschedulable_for_s = for_s;
                    out.unschedulable_message = Some(message);
                }
            }
            PodState::Gated { .. } => out.gated += 1,
            PodState::Gone => {}
        }
    }
    out.booting.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NOW: &str = "2026-11-23T10:00:00Z";

    pub(crate) fn now() -> Timestamp {
        NOW.parse().expect("valid timestamp")
    }

    /// A vLLM pod as the API server returns it, in the given state.
    pub(crate) fn pod(name: &str, state: &str) -> Pod {
        let base = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "llm",
                "creationTimestamp": "2026-11-23T09:50:00Z",
                "labels": {"app": "llama-8b-h100"}
            },
            "spec": {
                "containers": [{
                    "name": "vllm",
                    "image": "vllm/vllm-openai:v0.11.0",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "8", "nvidia.com/gpu": "1"}}
                }]
            }
        });
        let mut v = base;
        let status = match state {
            "ready" => serde_json::json!({
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T09:50:01Z"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-23T09:54:00Z"}
                ]
            }),
            "booting" => serde_json::json!({
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T09:58:00Z"},
                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                     "lastTransitionTime": "2026-11-23T09:58:00Z"}
                ]
            }),
            "unschedulable" => serde_json::json!({
                "phase": "Pending",
                "conditions": [{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/12 nodes are available: 4 Insufficient nvidia.com/gpu, 8 node(s) didn't match Pod's node affinity/selector.",
                    "lastTransitionTime": "2026-11-23T09:55:00Z"
                }]
            }),
            "gated" => {
                v["spec"]["schedulingGates"] = serde_json::json!([{"name": "kueue.x-k8s.io/admission"}]);
                serde_json::json!({
                    "phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated",
                                    "lastTransitionTime": "2026-11-23T09:50:00Z"}]
                })
            }
            "new" => serde_json::json!({"phase": "Pending"}),
            "failed" => serde_json::json!({"phase": "Failed"}),
            other => panic!("unknown fixture state {other}"),
        };
        if matches!(state, "ready" | "booting") {
            v["spec"]["nodeName"] = serde_json::json!("gpu-node-1");
        }
        v["status"] = status;
        serde_json::from_value(v).expect("fixture is a valid Pod")
    }

    #[test]
    fn each_state_is_recognized() {
        assert_eq!(classify(&pod("a", "ready"), now(), None), PodState::Ready);
        assert_eq!(classify(&pod("a", "failed"), now(), None), PodState::Gone);
        assert_eq!(
            classify(&pod("a", "gated"), now(), None),
            PodState::Gated { gates: vec!["kueue.x-k8s.io/admission".into()] }
        );
        match classify(&pod("a", "unschedulable"), now(), None) {
            PodState::Unschedulable { for_s, message } => {
                assert_eq!(for_s, 300.0);
                assert!(message.contains("Insufficient nvidia.com/gpu"));
            }
            other => panic!("expected unschedulable, got {other:?}"),
        }
        let mut deleting = pod("a", "ready");
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        assert_eq!(classify(&deleting, now(), None), PodState::Gone);
    }

    #[test]
    fn booting_pod_gets_an_eta_from_startup_seconds() {
        let PodState::Booting(b) = classify(&pod("b", "booting"), now(), Some(300)) else { panic!("booting") };
        assert_eq!((b.scheduled, b.age_s, b.eta_s, b.overdue), (true, 120.0, Some(180.0), false));
        let PodState::Booting(b) = classify(&pod("b", "booting"), now(), Some(60)) else { panic!("booting") };
        assert_eq!((b.eta_s, b.overdue), (Some(0.0), true));
        let PodState::Booting(b) = classify(&pod("b", "booting"), now(), None) else { panic!("booting") };
        assert_eq!(b.eta_s, None);
        let PodState::Booting(b) = classify(&pod("n", "new"), now(), Some(300)) else { panic!("booting") };
        assert_eq!((b.scheduled, b.age_s), (false, 600.0));
    }

    #[test]
    fn current_replicas_count_ready_and_booting_but_not_unschedulable_or_gated() {
        let pods = [
            pod("v-1", "ready"),
            pod("v-2", "ready"),
            pod("v-4", "booting"),
            pod("v-3", "new"),
            pod("v-5", "unschedulable"),
            pod("v-6", "unschedulable"),
            pod("v-7", "gated"),
            pod("v-8", "failed"),
        ];
        let s = summarize(&pods, now(), Some(600));
        assert_eq!((s.ready, s.booting.len(), s.unschedulable, s.gated), (2, 2, 2, 1));
        assert_eq!(s.current_replicas(), 4);
        assert_eq!(s.booting.iter().map(|b| b.pod.as_str()).collect::<Vec<_>>(), vec!["v-3", "v-4"]);
        assert!(s.unschedulable_beyond(300.0));
        assert!(!s.unschedulable_beyond(301.0));
    }
}
