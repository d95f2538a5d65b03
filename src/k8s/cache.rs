//! Watch-backed state of the cluster: a cycle reads these caches, not the API server.
//!
//! kube-rs reflectors, fed by watches, hold
//! - the VariantAutoscalings (as raw objects: each is parsed on its own, so one bad object
//!   cannot fail the others),
//! - the ConfigMaps of the configuration namespace,
//! - the Nodes and the Pods bound to a node (for the GPU inventory; other workloads' GPUs count
//!   wherever they run),
//! - with annotation discovery, the HorizontalPodAutoscalers and KEDA ScaledObjects,
//! - and per scale target: the target object (a watch on its name), its `scale` subresource
//!   (read again only when the object changes), and its pods (a watch on the target's label
//!   selector in its namespace — for a LeaderWorkerSet the whole group, not only the leaders its
//!   `scale` selects).
//!
//! Objects are stripped to the fields Allot reads before they are stored, so 10,000 pods take a
//! few megabytes. The per-target watches follow the VariantAutoscalings (and annotated scalers):
//! they start when a target is first referenced and stop when nothing references it.
//!
//! A source whose API is not installed (no KEDA, no VariantAutoscaling CRD yet) is `Absent` and
//! counts as empty; one the service account may not read is reported, never a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodCondition, PodSpec, PodStatus,
    ResourceRequirements,
};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::store::{Store, Writer};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::crd::VariantAutoscaling;
use crate::observe::inventory::{PRODUCT_LABELS, is_accelerator_resource};

/// KEDA's ScaledObject (`keda.sh/v1alpha1`).
pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"), "scaledobjects")
}

/// The VariantAutoscaling resource, for reading its objects raw.
pub fn variant_autoscaling_resource() -> ApiResource {
    ApiResource::erase::<VariantAutoscaling>(&())
}

/// Where the caches look.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheScope {
    /// VariantAutoscalings (and annotated scalers) of this namespace only; all when `None`.
    pub namespace: Option<String>,
    /// Namespace of the configuration ConfigMaps.
    pub config_namespace: String,
    /// Watch HorizontalPodAutoscalers and ScaledObjects for `llm-d.ai/managed` annotations.
    pub annotated_scalers: bool,
}

/// How far a watched source has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// The first listing has not completed.
    Pending,
    /// Listed; changes arrive through the watch.
    Ready,
    /// The API is not installed (404): the source is empty.
    Absent(String),
    /// The last attempt failed (the watch retries with backoff).
    Failed(String),
}

impl SyncState {
    /// Whether the source can be read (a missing API reads as empty).
    pub fn usable(&self) -> bool {
        matches!(self, SyncState::Ready | SyncState::Absent(_))
    }
}

/// One reflected source: its store and how far it has come.
pub struct Reflected<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub store: Store<K>,
    state: Arc<Mutex<SyncState>>,
    _task: Task,
}

impl<K: Resource + Clone + 'static> Reflected<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub fn state(&self) -> SyncState {
        lock(&self.state).clone()
    }

    /// The objects, or nothing while the source is absent.
    pub fn objects(&self) -> Vec<Arc<K>> {
        if matches!(self.state(), SyncState::Absent(_)) { Vec::new() } else { self.store.state() }
    }
}

/// A spawned task that is aborted when dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a watch event means for the rest of the controller.
pub type EventHook<K> = Arc<dyn Fn(&watcher::Event<K>) + Send + Sync>;

/// Start a reflector: list, then watch, with kube-rs's default backoff; objects pass through
/// `strip` before they are stored; `hook` sees every event after the store has it.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    strip: fn(&mut K),
    hook: Option<EventHook<K>>,
    counter: Arc<AtomicU64>,
    what: String,
) -> Reflected<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let writer = Writer::new(dyntype);
    let store = writer.as_reader();
    let state = Arc::new(Mutex::new(SyncState::Pending));
    let task_state = state.clone();
    let stream = watcher(api, config).default_backoff().modify(strip).reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if matches!(event, watcher::Event::InitDone) {
                        *lock(&task_state) = SyncState::Ready;
                    }
                    if let Some(hook) = &hook {
                        hook(&event);
                    }
                    if matches!(
                        event,
                        watcher::Event::InitApply(_) | watcher::Event::Apply(_) | watcher::Event::Delete(_)
                    ) {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(e) => {
                    let next = match api_code(&e) {
                        Some(404) => SyncState::Absent(format!("{what}: the API is not installed")),
                        Some(403) => SyncState::Failed(format!("{what}: forbidden (RBAC): {e}")),
                        _ => SyncState::Failed(format!("{what}: {e}")),
                    };
                    let mut s = lock(&task_state);
                    if *s != next {
                        tracing::warn!(source = %what, error = %e, "watch failed; retrying with backoff");
                    }
                    // A source that was listed stays usable while its watch reconnects.
                    if *s != SyncState::Ready || matches!(next, SyncState::Absent(_)) {
                        *s = next;
                    }
                }
            }
        }
    });
    Reflected { store, state, _task: Task(task) }
}

fn api_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Stripping: keep only what Allot reads.

fn strip_pod(p: &mut Pod) {
    let m = &mut p.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    m.finalizers = None;
    m.generate_name = None;
    if let Some(spec) = p.spec.take() {
        let keep = |c: Container| Container {
            name: c.name,
            resources: c.resources.map(|r| ResourceRequirements {
                requests: r.requests.map(|m| m.into_iter().filter(|(k, _)| is_accelerator_resource(k)).collect()),
                limits: r.limits.map(|m| m.into_iter().filter(|(k, _)| is_accelerator_resource(k)).collect()),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        p.spec = Some(PodSpec {
            containers: spec.containers.into_iter().map(keep).collect(),
            init_containers: spec.init_containers.map(|cs| cs.into_iter().map(keep).collect()),
            node_name: spec.node_name,
            scheduling_gates: spec.scheduling_gates,
            ..PodSpec::default()
        });
    }
    if let Some(status) = p.status.take() {
        p.status = Some(PodStatus {
            phase: status.phase,
            conditions: status.conditions.map(|cs| {
                cs.into_iter()
                    .filter(|c| c.type_ == "Ready" || c.type_ == "PodScheduled")
                    .map(|c| PodCondition { last_probe_time: None, ..c })
                    .collect()
            }),
            ..PodStatus::default()
        });
    }
}

fn strip_node(n: &mut Node) {
    let m = &mut n.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.owner_references = None;
    if let Some(labels) = m.labels.as_mut() {
        labels.retain(|k, _| PRODUCT_LABELS.contains(&k.as_str()) || k.starts_with("nvidia.com/"));
    }
    if let Some(spec) = n.spec.take() {
        n.spec = Some(NodeSpec { unschedulable: spec.unschedulable, taints: spec.taints, ..NodeSpec::default() });
    }
    if let Some(status) = n.status.take() {
        n.status = Some(NodeStatus {
            allocatable: status
                .allocatable
                .map(|a| a.into_iter().filter(|(k, _)| is_accelerator_resource(k)).collect()),
            conditions: status.conditions.map(|cs| {
                cs.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| NodeCondition { last_heartbeat_time: None, message: None, ..c })
                    .collect()
            }),
            ..NodeStatus::default()
        });
    }
}

fn strip_dynamic(o: &mut DynamicObject) {
    o.metadata.managed_fields = None;
}

fn strip_config_map(c: &mut ConfigMap) {
    c.metadata.managed_fields = None;
    c.binary_data = None;
}

fn strip_hpa(h: &mut HorizontalPodAutoscaler) {
    h.metadata.managed_fields = None;
    h.status = None;
}

// ---------------------------------------------------------------------------------------------
// Scale targets.

/// A workload a variant scales: `apiVersion`, kind and name in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey {
    pub namespace: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

impl TargetKey {
    pub fn resource(&self) -> ApiResource {
        let (group, version) = self.api_version.split_once('/').unwrap_or(("", &self.api_version));
        ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &self.kind))
    }

    /// Whether the target is a LeaderWorkerSet (a replica is a group of pods).
    pub fn is_leader_worker_set(&self) -> bool {
        self.kind == "LeaderWorkerSet" && self.api_version.starts_with("leaderworkerset.x-k8s.io/")
    }

    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What the `scale` subresource said when the target last changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleInfo {
    /// `spec.replicas`.
    pub replicas: Option<i32>,
    /// The label selector of the target's pods (for a LeaderWorkerSet: of all its groups' pods).
    pub pod_selector: String,
}

/// The cached view of one target.
#[derive(Clone, Debug)]
pub struct TargetView {
    pub object: Option<Arc<DynamicObject>>,
    pub scale: ScaleInfo,
    pub pods: Vec<Arc<Pod>>,
}

/// Why a target cannot be read yet, or at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetProblem {
    /// Its watches have not listed yet (a new target): skipped this cycle, no status written.
    Syncing,
    /// It cannot be used: missing, no scale subresource, no usable selector.
    Unusable(String),
}

#[derive(Default)]
struct TargetState {
    /// The target object's resourceVersion when `scale` was last read.
    read_at_version: Option<String>,
    /// A read of `scale` is in flight (the last result stays in use meanwhile).
    reading: bool,
    scale: Option<Result<ScaleInfo, String>>,
    pods: Option<(String, Reflected<Pod>)>,
}

struct TargetWatch {
    object: Reflected<DynamicObject>,
    state: Arc<Mutex<TargetState>>,
}

// ---------------------------------------------------------------------------------------------

/// The controller's watch-backed view of the cluster.
pub struct ClusterCache {
    client: Client,
    scope: CacheScope,
    pub variants: Reflected<DynamicObject>,
    pub config_maps: Reflected<ConfigMap>,
    pub nodes: Reflected<Node>,
    /// Pods bound to a node and not finished, in every namespace (stripped).
    pub bound_pods: Reflected<Pod>,
    pub hpas: Option<Reflected<HorizontalPodAutoscaler>>,
    pub scaled_objects: Option<Reflected<DynamicObject>>,
    targets: Arc<Mutex<BTreeMap<TargetKey, TargetWatch>>>,
    /// Objects the reflectors have taken in (listed or watched), for tests and diagnostics.
    events: Arc<AtomicU64>,
    on_change: Arc<dyn Fn() + Send + Sync>,
}

/// The field selector of pods that hold resources on a node.
pub const BOUND_PODS_FIELD_SELECTOR: &str = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed";

impl ClusterCache {
    /// Start every watch of `scope`. `on_change` is called when something the plan depends on
    /// changed in a way that asks for a prompt re-plan (see [`super::cluster`]'s filter); the
    /// VariantAutoscaling and ConfigMap events reach it through `variant_hook` / `config_hook`.
    pub fn start(
        client: Client,
        scope: CacheScope,
        variant_hook: EventHook<DynamicObject>,
        config_hook: EventHook<ConfigMap>,
        scaler_changed: Arc<dyn Fn() + Send + Sync>,
        on_change: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        let events = Arc::new(AtomicU64::new(0));
        let va_resource = variant_autoscaling_resource();
        let va_api: Api<DynamicObject> = match &scope.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &va_resource),
            None => Api::all_with(client.clone(), &va_resource),
        };
        let variants = reflect(
            va_api,
            watcher::Config::default(),
            va_resource,
            strip_dynamic,
            Some(variant_hook),
            events.clone(),
            "VariantAutoscalings".into(),
        );
        let config_maps = reflect(
            Api::namespaced(client.clone(), &scope.config_namespace),
            watcher::Config::default(),
            (),
            strip_config_map,
            Some(config_hook),
            events.clone(),
            format!("ConfigMaps in {}", scope.config_namespace),
        );
        let nodes = reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            (),
            strip_node,
            None,
            events.clone(),
            "Nodes".into(),
        );
        let bound_pods = reflect(
            Api::all(client.clone()),
            watcher::Config::default().fields(BOUND_PODS_FIELD_SELECTOR),
            (),
            strip_pod,
            None,
            events.clone(),
            "Pods".into(),
        );
        let (hpas, scaled_objects) = if scope.annotated_scalers {
            let changed = scaler_changed.clone();
            let hpa_hook: EventHook<HorizontalPodAutoscaler> = Arc::new(move |e| {
                if !matches!(e, watcher::Event::Init | watcher::Event::InitApply(_)) {
                    changed()
                }
            });
            let changed = scaler_changed.clone();
            let so_hook: EventHook<DynamicObject> = Arc::new(move |e| {
                if !matches!(e, watcher::Event::Init | watcher::Event::InitApply(_)) {
                    changed()
                }
            });
            let hpa_api: Api<HorizontalPodAutoscaler> = match &scope.namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let so_resource = scaled_object_resource();
            let so_api: Api<DynamicObject> = match &scope.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &so_resource),
                None => Api::all_with(client.clone(), &so_resource),
            };
            (
                Some(reflect(
                    hpa_api,
                    watcher::Config::default(),
                    (),
                    strip_hpa,
                    Some(hpa_hook),
                    events.clone(),
                    "HorizontalPodAutoscalers".into(),
                )),
                Some(reflect(
                    so_api,
                    watcher::Config::default(),
                    so_resource,
                    strip_dynamic,
                    Some(so_hook),
                    events.clone(),
                    "ScaledObjects".into(),
                )),
            )
        } else {
            (None, None)
        };
        Self {
            client,
            scope,
            variants,
            config_maps,
            nodes,
            bound_pods,
            hpas,
            scaled_objects,
            targets: Arc::new(Mutex::new(BTreeMap::new())),
            events,
            on_change,
        }
    }

    pub fn scope(&self) -> &CacheScope {
        &self.scope
    }

    /// Objects taken in by all reflectors so far (lists and watch events).
    pub fn events_seen(&self) -> u64 {
        self.events.load(Ordering::SeqCst)
    }

    /// The sources that are not usable yet, with their state (empty: all listed).
    pub fn unsynced(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, state: SyncState| match state {
            SyncState::Ready | SyncState::Absent(_) => {}
            SyncState::Pending => out.push(format!("{name}: listing")),
            SyncState::Failed(why) => out.push(why),
        };
        check("VariantAutoscalings", self.variants.state());
        check("ConfigMaps", self.config_maps.state());
        check("Nodes", self.nodes.state());
        check("Pods", self.bound_pods.state());
        if let Some(h) = &self.hpas {
            check("HorizontalPodAutoscalers", h.state());
        }
        if let Some(s) = &self.scaled_objects {
            check("ScaledObjects", s.state());
        }
        out
    }

    /// Wait up to `timeout` for every source and target to finish its first listing.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.unsynced().is_empty() && self.targets_syncing() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Targets whose watches have not listed yet, or whose `scale` is being read again (a cycle
    /// meanwhile uses the last reading; tests and the first cycle wait for it).
    pub fn targets_syncing(&self) -> usize {
        let targets = lock(&self.targets);
        targets
            .values()
            .filter(|t| {
                let reading = lock(&t.state).reading;
                reading || matches!(Self::view_of(t), Err(TargetProblem::Syncing))
            })
            .count()
    }

    /// Watch exactly these targets from now on: start the new ones, stop the others. Returns
    /// how many were started.
    pub fn track_targets(&self, wanted: &BTreeSet<TargetKey>) -> usize {
        let mut targets = lock(&self.targets);
        targets.retain(|k, _| wanted.contains(k));
        let mut started = 0;
        for key in wanted {
            if !targets.contains_key(key) {
                let watch = self.watch_target(key.clone());
                targets.insert(key.clone(), watch);
                started += 1;
            }
        }
        started
    }

    /// The cached target, or why it cannot be used (yet).
    pub fn target(&self, key: &TargetKey) -> Result<TargetView, TargetProblem> {
        let targets = lock(&self.targets);
        let watch = targets.get(key).ok_or(TargetProblem::Syncing)?;
        Self::view_of(watch)
    }

    fn view_of(watch: &TargetWatch) -> Result<TargetView, TargetProblem> {
        match watch.object.state() {
            SyncState::Pending => return Err(TargetProblem::Syncing),
            SyncState::Absent(why) | SyncState::Failed(why) if watch.object.store.is_empty() => {
                return Err(TargetProblem::Unusable(why));
            }
            _ => {}
        }
        let object = watch.object.store.state().into_iter().next();
        let state = lock(&watch.state);
        let scale = match (&object, &state.scale) {
            (None, _) => return Err(TargetProblem::Unusable("not found".into())),
            (Some(_), None) => return Err(TargetProblem::Syncing),
            (Some(_), Some(Err(why))) => return Err(TargetProblem::Unusable(why.clone())),
            (Some(_), Some(Ok(s))) => s.clone(),
        };
        let pods = match &state.pods {
            Some((selector, pods)) if *selector == scale.pod_selector => match pods.state() {
                SyncState::Pending => return Err(TargetProblem::Syncing),
                SyncState::Ready | SyncState::Absent(_) => pods.store.state(),
                SyncState::Failed(why) if pods.store.is_empty() => return Err(TargetProblem::Unusable(why)),
                SyncState::Failed(_) => pods.store.state(),
            },
            _ => return Err(TargetProblem::Syncing),
        };
        Ok(TargetView { object, scale, pods })
    }

    /// Watch one target: its object by name; on every new resourceVersion read `scale` again and
    /// (re)start the pod watch when the selector changed.
    fn watch_target(&self, key: TargetKey) -> TargetWatch {
        let resource = key.resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &key.namespace, &resource);
        let state = Arc::new(Mutex::new(TargetState::default()));
        let hook_state = state.clone();
        let client = self.client.clone();
        let events = self.events.clone();
        let on_change = self.on_change.clone();
        let hook_key = key.clone();
        let scale_api = api.clone();
        let hook: EventHook<DynamicObject> = Arc::new(move |event| {
            let object = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                watcher::Event::Delete(_) => {
                    let mut s = lock(&hook_state);
                    *s = TargetState::default();
                    s.scale = Some(Err("not found".into()));
                    return;
                }
                watcher::Event::Init | watcher::Event::InitDone => {
                    let mut s = lock(&hook_state);
                    if matches!(event, watcher::Event::InitDone) && s.read_at_version.is_none() && s.scale.is_none() {
                        // Listed and nothing there.
                        s.scale = Some(Err("not found".into()));
                    }
                    return;
                }
            };
            let version = object.resource_version();
            {
                let s = lock(&hook_state);
                if s.read_at_version == version && s.scale.is_some() {
                    return;
                }
            }
            // Read the scale subresource off the event path: the watch keeps flowing.
            let state = hook_state.clone();
            let client = client.clone();
            let events = events.clone();
            let on_change = on_change.clone();
            let key = hook_key.clone();
            let scale_api = scale_api.clone();
            {
                // Mark the scale as being re-read so the target counts as syncing until it is.
                let mut s = lock(&state);
                s.read_at_version = version.clone();
                s.reading = true;
                if matches!(s.scale, Some(Err(_))) {
                    s.scale = None;
                }
            }
            tokio::spawn(async move {
                let scale = read_scale(&scale_api, &key).await;
                let mut s = lock(&state);
                if s.read_at_version != version {
                    return; // a newer version is being read
                }
                s.reading = false;
                // A target that became usable or selects other pods asks for a re-plan; a new
                // replica count (an HPA acted, or Allot itself) does not.
                let changed = match (&s.scale, &scale) {
                    (Some(Ok(old)), Ok(new)) => old.pod_selector != new.pod_selector,
                    (_, Ok(_)) => true,
                    _ => false,
                };
                if let Ok(info) = &scale {
                    let restart = s.pods.as_ref().is_none_or(|(sel, _)| *sel != info.pod_selector);
                    if restart {
                        let pods_api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
                        let pods = reflect(
                            pods_api,
                            watcher::Config::default().labels(&info.pod_selector),
                            (),
                            strip_pod,
                            None,
                            events.clone(),
                            format!("pods of {}", key.describe()),
                        );
                        s.pods = Some((info.pod_selector.clone(), pods));
                    }
                } else {
                    s.pods = None;
                }
                s.scale = Some(scale);
                drop(s);
                if changed {
                    on_change();
                }
            });
        });
        let object = reflect(
            api,
            watcher::Config::default().fields(&format!("metadata.name={}", key.name)),
            resource,
            strip_dynamic,
            Some(hook),
            self.events.clone(),
            key.describe(),
        );
        TargetWatch { object, state }
    }
}

/// Read a target's `scale` subresource: replicas and the selector of its pods.
async fn read_scale(api: &Api<DynamicObject>, key: &TargetKey) -> Result<ScaleInfo, String> {
    let scale = api
        .get_scale(&key.name)
        .await
        .map_err(|e| format!("cannot read the scale of {}: {}", key.describe(), super::cluster::short_error(&e)))?;
    let selector = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let pod_selector = if key.is_leader_worker_set() {
        // LWS's scale selects only the leaders (worker-index=0); a replica is the whole group.
        format!("leaderworkerset.sigs.k8s.io/name={}", key.name)
    } else {
        selector
    };
    let parsed = super::selector::Selector::parse(&pod_selector)?;
    if parsed.is_empty() {
        return Err(format!("{} reports no pod selector in its scale subresource", key.describe()));
    }
    Ok(ScaleInfo { replicas: scale.spec.as_ref().and_then(|s| s.replicas), pod_selector })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_pods_keep_what_allot_reads_and_nothing_else() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "llm", "uid": "u", "labels": {"app": "x"},
                         "annotations": {"big": "x".repeat(10_000)},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "vllm", "image": "vllm/vllm-openai", "args": ["--model", "m"],
                "env": [{"name": "HF_TOKEN", "value": "secret"}],
                "resources": {"requests": {"cpu": "8", "nvidia.com/gpu": "4"}, "limits": {"nvidia.com/gpu": "4"}}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}],
                "containerStatuses": [{"name": "vllm", "ready": true, "restartCount": 0, "image": "i", "imageID": "i"}]}
        }))
        .expect("a valid pod");
        let before = crate::observe::inventory::pod_gpu_request(&pod);
        strip_pod(&mut pod);
        assert_eq!(crate::observe::inventory::pod_gpu_request(&pod), before);
        let text = serde_json::to_string(&pod).expect("serializes");
        assert!(text.len() < 400, "{text}");
        for gone in ["secret", "podIP", "Initialized", "managedFields", "cpu"] {
            assert!(!text.contains(gone), "{gone} should be stripped: {text}");
        }
        assert_eq!(pod.spec.as_ref().and_then(|s| s.node_name.as_deref()), Some("n1"));
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("x"));
    }

    #[test]
    fn leader_worker_sets_are_watched_by_group_not_by_leader() {
        let key = TargetKey {
            namespace: "llm".into(),
            api_version: "leaderworkerset.x-k8s.io/v1".into(),
            kind: "LeaderWorkerSet".into(),
            name: "vllm".into(),
        };
        assert!(key.is_leader_worker_set());
        let r = key.resource();
        assert_eq!((r.group.as_str(), r.plural.as_str()), ("leaderworkerset.x-k8s.io", "leaderworkersets"));
        let deployment = TargetKey { kind: "Deployment".into(), api_version: "apps/v1".into(), ..key };
        assert!(!deployment.is_leader_worker_set());
    }
}
