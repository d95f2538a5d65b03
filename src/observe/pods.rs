//! Pod states of a managed variant (DESIGN §5): every pod is ready, booting, unschedulable or
//! gated, and only the first two are capacity. Pure functions over k8s-openapi types; the clock
//! comes in as an argument.
//!
//! A replica is one pod, except for a LeaderWorkerSet, whose replica is a group of `size` pods
//! (a leader and its workers, labelled with the group index): [`summarize_groups`] counts groups,
//! and a group is ready only when all its pods are, unschedulable when any of them is.

use std::collections::{BTreeMap, BTreeSet};

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

/// A pod the scheduler cannot place, as evidence that its accelerator type is full.
#[derive(Clone, Debug, PartialEq)]
pub struct UnschedulablePod {
    /// `namespace/name`.
    pub pod: String,
    pub uid: String,
    /// Accelerators it requests.
    pub gpus: u32,
    pub for_s: f64,
}

/// Counts of a variant's replicas by state (pods, or LeaderWorkerSet groups).
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
    /// Every Unschedulable pod (of every group), sorted by pod.
    pub unschedulable_pods: Vec<UnschedulablePod>,
    /// Uids of the pods bound to a node.
    pub bound_uids: BTreeSet<String>,
    /// Scheduling gates holding gated pods (Kueue, quota), sorted.
    pub gates: BTreeSet<String>,
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

    /// The Unschedulable pods that count as evidence: those pending for at least `grace_s`.
    pub fn evidence_beyond(&self, grace_s: f64) -> impl Iterator<Item = &UnschedulablePod> {
        self.unschedulable_pods.iter().filter(move |p| p.for_s >= grace_s)
    }
}

/// Seconds from `from` to `now`, never negative (clock skew between nodes and Allot).
fn seconds_since(now: Timestamp, from: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<f64> {
    from.map(|t| now.duration_since(t.0).as_secs_f64().max(0.0))
}

/// When a pod became ready and how long it took from scheduling (or creation, if it was never
/// seen scheduled) to ready, seconds: the variant's observed start-up time. `None` for a pod that
/// is not ready, or whose readiness came back long after it started (a restart, a probe flap).
pub fn became_ready(pod: &Pod) -> Option<(Timestamp, f64)> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?.last_transition_time.as_ref()?;
    let from = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())?;
    let restarted = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.restart_count > 0));
    let seconds = ready.0.duration_since(from.0).as_secs_f64();
    ((0.0..=3600.0).contains(&seconds) && !restarted).then_some((ready.0, seconds))
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

/// Classify all pods of one variant (one pod = one replica).
pub fn summarize(pods: &[Pod], now: Timestamp, startup_s: Option<u32>) -> VariantPods {
    let mut out = VariantPods::default();
    for pod in pods {
        let state = classify(pod, now, startup_s);
        out.note_pod(pod, &state);
        match state {
            PodState::Ready => out.ready += 1,
            PodState::Booting(b) => out.booting.push(b),
            PodState::Unschedulable { for_s, message } => out.count_unschedulable(for_s, message),
            PodState::Gated { .. } => out.gated += 1,
            PodState::Gone => {}
        }
    }
    out.finish();
    out
}

/// The LeaderWorkerSet label holding a pod's group index.
pub const LWS_GROUP_INDEX_LABEL: &str = "leaderworkerset.sigs.k8s.io/group-index";

/// Classify the pods of a LeaderWorkerSet: one replica per group of `group_size` pods (leader
/// and workers share the group-index label). A group is ready when all its pods are Ready;
/// unschedulable when any pod is (a worker that finds no node makes the whole replica useless
/// and shows the type is full); gated when any pod is gated; booting otherwise (including a group
/// whose workers are not created yet). Pods without a group index are ignored.
pub fn summarize_groups(pods: &[Pod], now: Timestamp, startup_s: Option<u32>, group_size: u32) -> VariantPods {
    let mut out = VariantPods::default();
    let mut groups: BTreeMap<u64, Vec<(&Pod, PodState)>> = BTreeMap::new();
    for pod in pods {
        let Some(index) = pod.metadata.labels.as_ref().and_then(|l| l.get(LWS_GROUP_INDEX_LABEL)) else { continue };
        let Ok(index) = index.parse::<u64>() else { continue };
        let state = classify(pod, now, startup_s);
        out.note_pod(pod, &state);
        if state != PodState::Gone {
            groups.entry(index).or_default().push((pod, state));
        }
    }
    for (index, members) in groups {
        let unschedulable = members.iter().find_map(|(_, s)| match s {
            PodState::Unschedulable { for_s, message } => Some((*for_s, message.clone())),
            _ => None,
        });
        if let Some((for_s, message)) = unschedulable {
            out.count_unschedulable(for_s, message);
        } else if members.iter().any(|(_, s)| matches!(s, PodState::Gated { .. })) {
            out.gated += 1;
        } else if members.len() as u32 >= group_size.max(1) && members.iter().all(|(_, s)| *s == PodState::Ready) {
            out.ready += 1;
        } else {
            // Booting: the youngest member decides when the group serves.
            let leader = members.iter().min_by_key(|(p, _)| p.metadata.name.clone()).map(|(p, _)| *p);
            let mut booting = members
                .iter()
                .filter_map(|(_, s)| if let PodState::Booting(b) = s { Some(b.clone()) } else { None })
                .min_by(|a, b| a.age_s.total_cmp(&b.age_s))
                .unwrap_or_else(|| Booting {
                    pod: String::new(),
                    scheduled: true,
                    age_s: 0.0,
                    eta_s: startup_s.map(f64::from),
                    overdue: false,
                });
            booting.scheduled = members.iter().all(|(p, _)| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
                && members.len() as u32 >= group_size.max(1);
            booting.pod = leader.and_then(|p| p.metadata.name.clone()).unwrap_or_else(|| format!("group-{index}"));
            out.booting.push(booting);
        }
    }
    out.finish();
    out
}

impl VariantPods {
    fn note_pod(&mut self, pod: &Pod, state: &PodState) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match state {
            PodState::Gone => {}
            PodState::Unschedulable { for_s, .. } => self.unschedulable_pods.push(UnschedulablePod {
                pod: format!(
                    "{}/{}",
                    pod.metadata.namespace.as_deref().unwrap_or("default"),
                    pod.metadata.name.as_deref().unwrap_or_default()
                ),
                uid,
                gpus: super::inventory::pod_gpu_request(pod),
                for_s: *for_s,
            }),
            PodState::Gated { gates } => self.gates.extend(gates.iter().cloned()),
            PodState::Ready | PodState::Booting(_) => {
                if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                    self.bound_uids.insert(uid);
                }
            }
        }
    }

    fn count_unschedulable(&mut self, for_s: f64, message: String) {
        self.unschedulable += 1;
        if self.unschedulable_message.is_none() || for_s > self.unschedulable_for_s {
            self.unschedulable_for_s = for_s;
            self.unschedulable_message = Some(message);
        }
    }

    fn finish(&mut self) {
        self.booting.sort_by(|a, b| a.pod.cmp(&b.pod));
        self.unschedulable_pods.sort_by(|a, b| a.pod.cmp(&b.pod));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use kube::ResourceExt as _;

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
    fn a_ready_pod_tells_how_long_it_took_from_scheduling_to_ready() {
        let (at, seconds) = became_ready(&pod("a", "ready")).expect("ready");
        assert_eq!(seconds, 239.0);
        assert_eq!(at, "2026-11-23T09:54:00Z".parse::<Timestamp>().expect("valid"));
        assert_eq!(became_ready(&pod("a", "booting")), None);
        let mut restarted = pod("a", "ready");
        let status = restarted.status.as_mut().expect("status");
        status.container_statuses = Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
            name: "vllm".into(),
            restart_count: 2,
            ..Default::default()
        }]);
        assert_eq!(became_ready(&restarted), None, "a restart's readiness is not a start-up");
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

    /// A pod of LeaderWorkerSet `vllm` (kubernetes-sigs/lws docs/examples/vllm/GPU/lws.yaml: size 2,
    /// 8 GPUs per pod), as the LWS controller labels it.
    fn lws_pod(group: u32, worker: u32, state: &str) -> Pod {
        let name = if worker == 0 { format!("vllm-{group}") } else { format!("vllm-{group}-{worker}") };
        let mut p = pod(&name, state);
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some(BTreeMap::from([
            ("leaderworkerset.sigs.k8s.io/name".to_string(), "vllm".to_string()),
            (LWS_GROUP_INDEX_LABEL.to_string(), group.to_string()),
            ("leaderworkerset.sigs.k8s.io/worker-index".to_string(), worker.to_string()),
        ]));
        let res = p.spec.as_mut().expect("spec").containers[0].resources.as_mut().expect("resources");
        for m in [res.requests.as_mut(), res.limits.as_mut()].into_iter().flatten() {
            m.insert("nvidia.com/gpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("8".into()));
        }
        p
    }

    #[test]
    fn a_leader_worker_group_is_one_replica_and_an_unschedulable_worker_makes_it_pending() {
        let pods = [
            lws_pod(0, 0, "ready"),
            lws_pod(0, 1, "ready"),
            // Group 1: the leader runs, its worker finds no node.
            lws_pod(1, 0, "ready"),
            lws_pod(1, 1, "unschedulable"),
            // Group 2: both scheduled, the worker still loading.
            lws_pod(2, 0, "ready"),
            lws_pod(2, 1, "booting"),
        ];
        let s = summarize_groups(&pods, now(), Some(600), 2);
        assert_eq!((s.ready, s.booting.len(), s.unschedulable, s.gated), (1, 1, 1, 0));
        assert_eq!(s.current_replicas(), 2, "the group with a pending worker is not capacity");
        assert_eq!(s.booting[0].pod, "vllm-2");
        assert_eq!(s.unschedulable_pods.len(), 1);
        assert_eq!((s.unschedulable_pods[0].pod.as_str(), s.unschedulable_pods[0].gpus), ("llm/vllm-1-1", 8));
        assert!(s.bound_uids.contains("uid-vllm-1"), "the pending group's leader holds its GPUs");
        // Seen through the scale subresource's leader-only selector, the same replicas would
        // look all ready: the leaders are.
        let leaders: Vec<Pod> = pods
            .iter()
            .filter(|p| p.labels().get("leaderworkerset.sigs.k8s.io/worker-index").is_some_and(|i| i == "0"))
            .cloned()
            .collect();
        assert_eq!(summarize(&leaders, now(), Some(600)).ready, 3);
        // A group whose worker does not exist yet is booting, not ready.
        let s = summarize_groups(&[lws_pod(0, 0, "ready")], now(), Some(600), 2);
        assert_eq!((s.ready, s.booting.len()), (0, 1));
    }

    #[test]
    fn gated_pods_report_their_gates_and_pending_pods_their_requests() {
        let pods = [pod("v-1", "ready"), pod("v-2", "gated"), pod("v-3", "unschedulable")];
        let s = summarize(&pods, now(), None);
        assert_eq!(s.gates.iter().collect::<Vec<_>>(), vec!["kueue.x-k8s.io/admission"]);
        assert_eq!(s.unschedulable_pods.len(), 1);
        assert_eq!((s.unschedulable_pods[0].gpus, s.unschedulable_pods[0].for_s), (1, 300.0));
        assert_eq!(s.evidence_beyond(301.0).count(), 0);
    }
}
