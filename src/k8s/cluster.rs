//! [`KubeCluster`]: the controller's [`Cluster`] on a real Kubernetes API server.
//!
//! `observe` reads the watch-backed caches ([`super::cache`]), never the API server: the
//! configuration ConfigMaps, the VariantAutoscalings (each parsed on its own) and annotated
//! scalers, each target's object, `scale` and pods, the Nodes and the bound Pods; then load
//! through the [`LoadSource`]. It assembles a scenario with
//! [`crate::observe::snapshot::assemble`] and validates it.
//!
//! Without a usable configuration the controller runs but does not act
//! ([`ClusterError::NotConfigured`]): a leader marks every VariantAutoscaling `Ready=False` with
//! the reason, and picks the configuration up as soon as it appears. The Prometheus collector is
//! built from the configuration and rebuilt when its settings change.
//!
//! `apply` does per variant: optional direct scaling through `scale` (field manager `allot`), an
//! Event when the desired replicas change, and a server-side apply of `/status` (VariantAutoscalings
//! only: a variant discovered from an annotated HPA or ScaledObject has no status to write, its
//! Events go to the scaler). Variants left out get `Ready=False` naming why, and a Warning Event
//! when that reason changes. A failure is recorded for that variant and the others go on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;

use super::cache::{CacheScope, ClusterCache, EventHook, TargetKey, TargetProblem, TargetView};
use super::config::{AllotConfig, ClusterConfig};
use super::crd::{ScaleTargetRef, VariantAutoscaling};
use super::replan::ReplanFilter;
use super::status::{READY, VariantFacts, stamped, status_for, with_ready};
use super::variant::{
    Scaler, ScalerKind, parse_variant, scaler_from_hpa, scaler_from_scaled_object, synthesize, target_facts, target_key,
};
use crate::analyze::sizes::SizeDistribution;
use crate::controller::evidence::{LatencySummary, RestoredCalibration, ServedStats};
use crate::controller::{
    ActError, ActErrorKind, Applied, Cluster, ClusterError, Decision, Evidence, Observed, PodCounts, Tuning,
};
use crate::observe::inventory;
use crate::observe::pods::{VariantPods, summarize, summarize_groups};
use crate::observe::snapshot::{ModelLoad, Observation, TargetFacts, assemble, variant_name};
use crate::prometheus::{LoadSource, MetricsProblem, ModelMetrics, TokenHistogram};
use crate::scenario::format::{HistogramBucketSpec, HistogramSpec};

/// How long a cycle waits for targets that appeared since the first ones were listed (a new
/// VariantAutoscaling's Deployment and pods): milliseconds normally, bounded so that one target
/// that does not answer cannot hold the loop.
const NEW_TARGET_SYNC: Duration = Duration::from_secs(5);

/// Field manager of every write, so `kubectl get -o yaml --show-managed-fields` names Allot.
pub const FIELD_MANAGER: &str = "allot";
/// `reportingController` of Allot's Events.
pub const REPORTING_CONTROLLER: &str = "llmd.ai/allot";

/// Where the controller looks, and the names of its ConfigMaps (plain settings: the command line
/// builds them).
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    /// Only VariantAutoscalings (and annotated scalers) of this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Namespace of the ConfigMaps.
    pub config_namespace: String,
    pub accelerator_costs: String,
    pub service_classes: String,
    pub wva_controller: String,
    pub allot: String,
    /// Settings before any ConfigMap (command line and environment).
    pub defaults: AllotConfig,
    /// `reportingInstance` of Events (the pod name).
    pub identity: String,
    /// Discover variants from HPAs and ScaledObjects annotated `llm-d.ai/managed: "true"`.
    pub annotated_scalers: bool,
}

impl Default for Scope {
    fn default() -> Self {
        use super::config::*;
        Self {
            namespace: None,
            config_namespace: WVA_NAMESPACE.into(),
            accelerator_costs: ACCELERATOR_COSTS_CONFIG_MAP.into(),
            service_classes: SERVICE_CLASSES_CONFIG_MAP.into(),
            wva_controller: WVA_CONTROLLER_CONFIG_MAP.into(),
            allot: ALLOT_CONFIG_MAP.into(),
            defaults: AllotConfig::default(),
            identity: "allot".into(),
            annotated_scalers: true,
        }
    }
}

impl Scope {
    fn config_map_names(&self) -> Vec<String> {
        [&self.accelerator_costs, &self.service_classes, &self.wva_controller, &self.allot]
            .map(|n| n.to_string())
            .to_vec()
    }
}

/// Where a planned variant came from.
#[derive(Clone, Debug, PartialEq)]
enum Source {
    /// A VariantAutoscaling: its status is Allot's to write.
    Object { uid: Option<String>, status: Option<serde_json::Value> },
    /// An annotated HPA or ScaledObject: Events go to it, nothing else is written.
    Scaler { kind: ScalerKind, name: String, uid: Option<String> },
}

/// What the last observation found about one variant, for `apply`.
#[derive(Clone, Debug)]
struct Seen {
    namespace: String,
    name: String,
    source: Source,
    target: (ApiResource, String),
    /// The target's `spec.replicas` (what direct scaling compares with).
    target_replicas: Option<i32>,
    /// The desired replicas published before this cycle (an Event marks changes).
    published: Option<i32>,
    facts: VariantFacts,
}

/// A variant left out of the plan, and what to tell its object.
#[derive(Clone, Debug)]
struct Left {
    namespace: String,
    name: String,
    source: Source,
    /// `InvalidSpec`, `VariantSkipped`, `TargetUnusable`.
    reason: &'static str,
    message: String,
    generation: Option<i64>,
    conditions: Vec<Condition>,
}

/// Builds the load source from the configuration in force (Prometheus settings live in the
/// ConfigMaps); an error leaves the controller not configured.
pub type LoadFactory<L> = Box<dyn Fn(&ClusterConfig) -> Result<L, String> + Send + Sync>;

/// The controller's view of a Kubernetes cluster, with load from `L`.
pub struct KubeCluster<L: LoadSource> {
    client: Client,
    cache: ClusterCache,
    loader: LoadFactory<L>,
    /// The load source and the Prometheus settings it was built from.
    load: Option<(super::config::PrometheusConfig, L)>,
    scope: Scope,
    /// The last configuration that parsed: a bad edit keeps it in force.
    config: Option<ClusterConfig>,
    /// Why the controller is not configured, as last reported to the VariantAutoscalings.
    not_configured: Option<String>,
    /// The last good load per model, planned on while a model's metrics are missing.
    last_load: BTreeMap<String, ModelLoad>,
    /// The planned variants of the last observation, by name.
    seen: BTreeMap<String, Seen>,
    /// The variants the last observation left out.
    left: Vec<Left>,
    /// Desired replicas last published for annotated scalers (they have no status to compare).
    published_scalers: BTreeMap<String, i32>,
    /// Warning Events already recorded for scalers left out, by scaler, with the reason.
    reported_scalers: BTreeMap<String, String>,
    leader: Option<watch::Receiver<bool>>,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
    /// How long the first observation waits for the caches' initial listing.
    first_sync: Duration,
    synced_once: bool,
    /// Whether the first targets have been waited for (later new ones wait [`NEW_TARGET_SYNC`]).
    targets_synced_once: bool,
    /// Pods that became ready up to this time have had their start-up learned.
    startups_seen_until: Option<Timestamp>,
}

impl<L: LoadSource> KubeCluster<L> {
    /// Start the watches of `scope`; `on_change` is called when a VariantAutoscaling's spec, a
    /// configuration ConfigMap, an annotated scaler or a target's pods change (a prompt re-plan).
    pub fn start(client: Client, scope: Scope, loader: LoadFactory<L>, on_change: Arc<dyn Fn() + Send + Sync>) -> Self {
        let variant_filter = Mutex::new(ReplanFilter::default());
        let notify = on_change.clone();
        let variant_hook: EventHook<DynamicObject> = Arc::new(move |event| {
            let ask = variant_filter.lock().unwrap_or_else(|e| e.into_inner()).variant_event(event);
            if ask {
                notify();
            }
        });
        let config_filter = Mutex::new(ReplanFilter::default());
        let names = scope.config_map_names();
        let notify = on_change.clone();
        let config_hook: EventHook<ConfigMap> = Arc::new(move |event: &watcher::Event<ConfigMap>| {
            let ask = config_filter.lock().unwrap_or_else(|e| e.into_inner()).config_event(event, &names);
            if ask {
                tracing::info!("configuration changed");
                notify();
            }
        });
        let cache_scope = CacheScope {
            namespace: scope.namespace.clone(),
            config_namespace: scope.config_namespace.clone(),
            annotated_scalers: scope.annotated_scalers,
        };
        let cache =
            ClusterCache::start(client.clone(), cache_scope, variant_hook, config_hook, on_change.clone(), on_change);
        Self {
            client,
            cache,
            loader,
            load: None,
            scope,
            config: None,
            not_configured: None,
            last_load: BTreeMap::new(),
            seen: BTreeMap::new(),
            left: Vec::new(),
            published_scalers: BTreeMap::new(),
            reported_scalers: BTreeMap::new(),
            leader: None,
            clock: Box::new(Timestamp::now),
            first_sync: Duration::from_secs(30),
            synced_once: false,
            targets_synced_once: false,
            startups_seen_until: None,
        }
    }

    /// [`Self::start`] with a fixed load source and no re-plan notifications (tests, tools).
    pub fn with_load(client: Client, scope: Scope, load: L) -> Self
    where
        L: Clone,
    {
        Self::start(client, scope, Box::new(move |_| Ok(load.clone())), Arc::new(|| {}))
    }

    /// Connect with the in-cluster service account, or `KUBECONFIG` / `~/.kube/config`.
    pub async fn connect() -> Result<Client, ClusterError> {
        Client::try_default().await.map_err(|e| {
            ClusterError::Unavailable(format!("no Kubernetes configuration (in-cluster or KUBECONFIG): {e}"))
        })
    }

    /// Apply only while `leader` says this replica leads ([`super::lease`]).
    pub fn with_leadership(mut self, leader: watch::Receiver<bool>) -> Self {
        self.leader = Some(leader);
        self
    }

    /// Use another clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// The configuration in force (the last that parsed), if any yet.
    pub fn config(&self) -> Option<&ClusterConfig> {
        self.config.as_ref()
    }

    /// The API client (to share with [`super::LeaderElector`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The watch caches (diagnostics and tests).
    pub fn cache(&self) -> &ClusterCache {
        &self.cache
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    fn leads(&self) -> bool {
        self.leader.as_ref().is_none_or(|rx| *rx.borrow())
    }

    /// The configuration from the cached ConfigMaps; a bad one keeps the last good one in force.
    fn read_config(&mut self, warnings: &mut Vec<String>) -> Result<ClusterConfig, String> {
        let data = |name: &str| -> Option<BTreeMap<String, String>> {
            self.cache
                .config_maps
                .objects()
                .iter()
                .find(|c| c.name_any() == name)
                .map(|c| c.data.clone().unwrap_or_default())
        };
        let ns = &self.scope.config_namespace;
        let parsed = match (data(&self.scope.accelerator_costs), data(&self.scope.service_classes)) {
            (Some(costs), Some(classes)) => ClusterConfig::parse(
                &self.scope.defaults,
                &costs,
                &classes,
                data(&self.scope.wva_controller).as_ref(),
                data(&self.scope.allot).as_ref(),
            )
            .map_err(|e| e.to_string()),
            (costs, _) => Err(format!(
                "ConfigMap {ns}/{} not found",
                if costs.is_none() { &self.scope.accelerator_costs } else { &self.scope.service_classes }
            )),
        };
        match (parsed, &self.config) {
            (Ok(config), _) => {
                self.config = Some(config.clone());
                Ok(config)
            }
            (Err(e), Some(last)) => {
                tracing::warn!(error = %e, "configuration rejected; the last good one stays in force");
                warnings.push(format!("{e}\n(the last good configuration stays in force)"));
                Ok(last.clone())
            }
            (Err(e), None) => Err(e),
        }
    }

    /// The load source for `config`, rebuilt when its Prometheus settings changed.
    fn load_source(&mut self, config: &ClusterConfig) -> Result<(), String> {
        let wanted = &config.allot.prometheus;
        if self.load.as_ref().is_some_and(|(p, _)| p == wanted) {
            return Ok(());
        }
        let load = (self.loader)(config)?;
        if self.load.is_some() {
            tracing::info!("Prometheus settings changed; collector rebuilt");
        }
        self.load = Some((wanted.clone(), load));
        Ok(())
    }

    /// Not configured: say so on every VariantAutoscaling (leader only, once per reason).
    async fn report_not_configured(&mut self, reason: &str) {
        if self.not_configured.as_deref() == Some(reason) || !self.leads() {
            return;
        }
        self.not_configured = Some(reason.to_string());
        let now = self.now();
        let message = format!("Allot is not configured and does not act: {reason}");
        for object in self.cache.variants.objects() {
            let namespace = object.namespace().unwrap_or_else(|| "default".into());
            let existing: Vec<Condition> = object
                .data
                .get("status")
                .and_then(|s| s.get("conditions"))
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .unwrap_or_default();
            let ready =
                stamped(&existing, object.metadata.generation, READY, false, "NotConfigured", message.clone(), now);
            if let Err(e) =
                self.apply_status(&namespace, &object.name_any(), with_ready(object.data.get("status"), &ready)).await
            {
                tracing::warn!(variant = %object.name_any(), error = %short_error(&e), "could not report the missing configuration");
            }
        }
    }

    async fn observe_cluster(&mut self) -> Result<Observed, ClusterError> {
        let wait = if self.synced_once { Duration::ZERO } else { self.first_sync };
        if !self.cache.wait_synced(wait).await {
            let unsynced = self.cache.unsynced();
            if !unsynced.is_empty() {
                return Err(ClusterError::NotSynced(unsynced.join("; ")));
            }
        }
        self.synced_once = true;
        let now = self.now();
        let mut warnings = Vec::new();
        self.left.clear();

        // Variants: every VariantAutoscaling on its own, then the annotated scalers.
        let mut vas: Vec<VariantAutoscaling> = Vec::new();
        let mut sources: BTreeMap<String, Source> = BTreeMap::new();
        for object in self.cache.variants.objects() {
            if object.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let status = object.data.get("status").cloned();
            match parse_variant(&object) {
                Ok(va) => {
                    sources.insert(variant_name(&va), Source::Object { uid: va.metadata.uid.clone(), status });
                    vas.push(va);
                }
                Err(invalid) => self.left.push(Left {
                    namespace: object.namespace().unwrap_or_else(|| "default".into()),
                    name: object.name_any(),
                    source: Source::Object { uid: object.metadata.uid.clone(), status: status.clone() },
                    reason: "InvalidSpec",
                    message: format!("{invalid}"),
                    generation: object.metadata.generation,
                    conditions: conditions_of(status.as_ref()),
                }),
            }
        }
        let crd_targets: BTreeSet<TargetKey> = vas
            .iter()
            .map(|va| {
                target_key(&va.namespace().unwrap_or_else(|| "default".into()), &va.spec.scale_target(&va.name_any()))
            })
            .collect();
        for (scaler, result) in self.annotated_scalers(&crd_targets, &mut warnings) {
            match result {
                Ok(va) => {
                    let key = variant_name(&va);
                    sources.insert(
                        key,
                        Source::Scaler { kind: scaler.kind, name: scaler.name(), uid: scaler.metadata.uid.clone() },
                    );
                    vas.push(va);
                }
                Err(message) => self.left.push(Left {
                    namespace: scaler.namespace(),
                    name: scaler.name(),
                    source: Source::Scaler { kind: scaler.kind, name: scaler.name(), uid: scaler.metadata.uid.clone() },
                    reason: "InvalidSpec",
                    message,
                    generation: scaler.metadata.generation,
                    conditions: Vec::new(),
                }),
            }
        }
        vas.sort_by_key(variant_name);

        // Targets: watched from now on (also while not configured, so that the first configured
        // cycle finds them listed); their pods, replicas and what their objects say.
        let keys: BTreeMap<String, TargetKey> = vas
            .iter()
            .map(|va| {
                let ns = va.namespace().unwrap_or_else(|| "default".into());
                (variant_name(va), target_key(&ns, &va.spec.scale_target(&va.name_any())))
            })
            .collect();
        // New targets (the first cycle's all of them) are listed before they are used: a cycle
        // that found them still syncing failed as NotSynced, and the re-plan their scale read
        // asks for could come before their pods were listed, leaving the loop idle until its
        // next tick (a new leader did not act for an hour in tests/k8s_handover.rs, 1 run in 3).
        if self.cache.track_targets(&keys.values().cloned().collect()) > 0 {
            let wait = if self.targets_synced_once { self.first_sync.min(NEW_TARGET_SYNC) } else { self.first_sync };
            self.cache.wait_synced(wait).await;
            self.targets_synced_once = true;
        }
        let config = match self.read_config(&mut warnings).and_then(|c| self.load_source(&c).map(|()| c)) {
            Ok(c) => c,
            Err(reason) => {
                self.report_not_configured(&reason).await;
                return Err(ClusterError::NotConfigured(reason));
            }
        };
        if self.not_configured.take().is_some() {
            tracing::info!("configuration found; planning and acting");
        }
        let mut views: BTreeMap<String, TargetView> = BTreeMap::new();
        let mut facts: BTreeMap<String, TargetFacts> = BTreeMap::new();
        let mut group_sizes: BTreeMap<String, u32> = BTreeMap::new();
        let mut unusable: BTreeSet<String> = BTreeSet::new();
        for va in &vas {
            let name = variant_name(va);
            let key = &keys[&name];
            match self.cache.target(key) {
                Ok(view) => {
                    if let Some(object) = &view.object {
                        let (f, size) = target_facts(key, object);
                        facts.insert(name.clone(), f);
                        if let Some(size) = size {
                            group_sizes.insert(name.clone(), size);
                        }
                    }
                    views.insert(name, view);
                }
                Err(TargetProblem::Syncing) => {
                    warnings.push(format!("variant {name}: waiting for the first listing of {}", key.describe()));
                    unusable.insert(name);
                }
                Err(TargetProblem::Unusable(why)) => {
                    let message = format!("scale target {}: {why}", key.describe());
                    self.leave(&name, va, sources.get(&name), "TargetUnusable", message);
                    unusable.insert(name);
                }
            }
        }
        vas.retain(|va| !unusable.contains(&variant_name(va)));

        // Pods per variant, as the target's watch selects them.
        let mut variant_pods: BTreeMap<String, VariantPods> = BTreeMap::new();
        let mut pod_owner: BTreeMap<(String, String), String> = BTreeMap::new();
        for va in &vas {
            let name = variant_name(va);
            let pods: Vec<Pod> = views[&name].pods.iter().map(|p| (**p).clone()).collect();
            for p in &pods {
                let key = (p.namespace().unwrap_or_default(), p.name_any());
                if let Some(other) = pod_owner.insert(key.clone(), name.clone()) {
                    warnings.push(format!("pod {}/{} is selected by both {other} and {name}", key.0, key.1));
                }
            }
            let summary = match group_sizes.get(&name) {
                Some(size) => summarize_groups(&pods, now, va.spec.startup_seconds, *size),
                None => summarize(&pods, now, va.spec.startup_seconds),
            };
            variant_pods.insert(name, summary);
        }

        // Models with no replica asked for and none ready: no vLLM pod, so no vLLM metrics.
        let mut at_zero: BTreeMap<String, bool> = BTreeMap::new();
        for va in &vas {
            let name = variant_name(va);
            let zero = views[&name].scale.replicas == Some(0) && variant_pods.get(&name).is_none_or(|p| p.ready == 0);
            *at_zero.entry(va.spec.model_id.clone()).or_insert(true) &= zero;
        }
        let at_zero: BTreeSet<String> = at_zero.into_iter().filter(|(_, z)| *z).map(|(m, _)| m).collect();
        let load = self.collect_load(&vas, &config, &at_zero).await;
        let nodes = self.cache.nodes.objects();
        let bound = self.cache.bound_pods.objects();
        // Pods of variants left out of the plan hold GPUs like any other workload's: assemble,
        // then count again without the skipped variants' pods when some were skipped.
        let mut planned: BTreeSet<String> = vas.iter().map(variant_name).collect();
        let assembly = loop {
            let managed = |p: &Pod| {
                let key = (p.namespace().unwrap_or_default(), p.name_any());
                pod_owner.get(&key).is_some_and(|owner| planned.contains(owner))
            };
            let inv = inventory::observe_refs(
                nodes.iter().map(|n| &**n),
                bound.iter().map(|p| &**p),
                &config.allot.tolerated_taint_keys,
                managed,
            );
            let assembly = assemble(&Observation {
                variants: &vas,
                config: &config,
                inventory: &inv,
                pods: &variant_pods,
                targets: &facts,
                load: &load.loads,
            });
            let skipped: BTreeSet<String> = assembly.skipped.iter().map(|s| s.variant.clone()).collect();
            if skipped.iter().all(|s| !planned.contains(s)) {
                break assembly;
            }
            planned.retain(|v| !skipped.contains(v));
        };
        for s in &assembly.skipped {
            warnings.push(format!("variant {} skipped: {}", s.variant, s.reason));
            if let Some(va) = vas.iter().find(|va| variant_name(va) == s.variant) {
                self.leave(&s.variant, va, sources.get(&s.variant), "VariantSkipped", s.reason.clone());
            }
        }
        for l in &self.left {
            if l.reason != "VariantSkipped" {
                warnings.push(format!("{}/{} left out: {}", l.namespace, l.name, l.message));
            }
        }
        warnings.extend(assembly.warnings.iter().cloned());
        if assembly.scenario.variants.is_empty() {
            return Err(if unusable.is_empty() || self.cache.targets_syncing() == 0 {
                ClusterError::NothingToPlan(match self.left.len() {
                    0 => "no VariantAutoscaling or annotated scaler".to_string(),
                    n => format!("all {n} variants are left out (see their Ready conditions)"),
                })
            } else {
                ClusterError::NotSynced(format!(
                    "{} scale targets are still being listed",
                    self.cache.targets_syncing()
                ))
            });
        }
        let snapshot = assembly.validate().map_err(|e| ClusterError::InvalidSnapshot(e.to_string()))?;

        // What apply needs later, by variant name.
        self.seen.clear();
        let mut pod_counts = Vec::with_capacity(snapshot.variants.len());
        for v in &snapshot.variants {
            let counts = variant_pods.get(&v.name).map(counts).unwrap_or_default();
            pod_counts.push(counts);
            let Some(va) = vas.iter().find(|va| variant_name(va) == v.name) else { continue };
            let Some(view) = views.get(&v.name) else { continue };
            let Some(source) = sources.get(&v.name) else { continue };
            let key = &keys[&v.name];
            let model = &snapshot.models[v.model].name;
            let accelerator = &snapshot.accelerators[v.accelerator].name;
            let status = va.status.as_ref();
            let published = match source {
                Source::Object { .. } => {
                    status.and_then(|s| s.desired_optimized_alloc.as_ref()).map(|d| d.num_replicas)
                }
                Source::Scaler { .. } => self.published_scalers.get(&v.name).copied(),
            };
            self.seen.insert(
                v.name.clone(),
                Seen {
                    namespace: va.namespace().unwrap_or_else(|| "default".into()),
                    name: va.name_any(),
                    source: source.clone(),
                    target: (key.resource(), key.name.clone()),
                    target_replicas: view.scale.replicas,
                    published,
                    facts: VariantFacts {
                        generation: va.metadata.generation,
                        conditions: status.map(|s| s.conditions.clone()).unwrap_or_default(),
                        gpus_per_replica: v.gpus_per_replica,
                        max_batch: v.max_batch,
                        unit_cost: config.accelerator(accelerator).map_or(0.0, |a| a.cost),
                        metrics: load.metrics.get(model).cloned(),
                        problem: load.problems.get(model).cloned(),
                        at_zero: load.at_zero.contains(model),
                    },
                },
            );
        }
        let mut evidence = self.evidence(&snapshot, &vas, &views, &pod_counts, &load.metrics, now);
        evidence.backlog =
            load.gateway_waiting.iter().filter(|(_, w)| **w > 0.0).map(|(m, w)| (m.clone(), *w)).collect();
        if let Some(problem) = &load.gateway_problem {
            warnings.push(format!("gateway queue not read (models at zero cannot be woken by it): {problem}"));
        }
        Ok(Observed {
            at_s: now.as_millisecond() as f64 / 1000.0,
            scenario: assembly.scenario,
            snapshot,
            pods: pod_counts,
            stale_models: load.problems.iter().map(|(m, p)| (m.clone(), p.to_string())).collect(),
            metric_age_s: load.metrics.iter().map(|(m, x)| (m.clone(), x.age_s)).collect(),
            warnings,
            tuning: Some(Tuning {
                interval: config.allot.cycle_interval,
                behavior: config.allot.behavior.clone(),
                controls: Some(config.allot.controls.clone()),
            }),
            pending: assembly.evidence,
            evidence,
        })
    }

    /// What Prometheus and the pods say beyond the load: per variant, the latency and saturation
    /// of its servers (from its model's vLLM metrics, when it is the only variant of the model
    /// with ready replicas: vLLM's metrics carry the model, not the variant), start-up times of
    /// pods that became ready since the last observation, and declared start-up times.
    fn evidence(
        &mut self,
        snapshot: &crate::scenario::Snapshot,
        vas: &[VariantAutoscaling],
        views: &BTreeMap<String, TargetView>,
        pods: &[PodCounts],
        metrics: &BTreeMap<String, ModelMetrics>,
        now: Timestamp,
    ) -> Evidence {
        let mut evidence = Evidence::default();
        let window_s = crate::prometheus::CollectorSettings::default().rate_window.as_secs_f64();
        let seen_until = self.startups_seen_until;
        for (i, v) in snapshot.variants.iter().enumerate() {
            let model = &snapshot.models[v.model].name;
            if let Some(va) = vas.iter().find(|va| variant_name(va) == v.name) {
                if let Some(s) = va.spec.startup_seconds {
                    evidence.startup_spec_s.insert(v.name.clone(), f64::from(s));
                }
                if let Some(restored) = va.status.as_ref().and_then(|s| s.calibration.as_ref()).and_then(restorable) {
                    evidence.restored.insert(v.name.clone(), restored);
                }
            }
            if let Some(view) = views.get(&v.name) {
                let started: Vec<f64> = view
                    .pods
                    .iter()
                    .filter_map(|p| crate::observe::pods::became_ready(p))
                    .filter(|(at, _)| seen_until.is_none_or(|t| *at > t))
                    .map(|(_, s)| s)
                    .collect();
                if !started.is_empty() {
                    evidence.startups_s.insert(v.name.clone(), started);
                }
            }
            let serving = snapshot
                .variants
                .iter()
                .enumerate()
                .filter(|(j, w)| w.model == v.model && pods.get(*j).is_some_and(|p| p.ready > 0))
                .count();
            let ready = pods.get(i).map_or(0, |p| p.ready);
            let Some(m) = metrics.get(model).filter(|_| serving == 1 && ready > 0) else { continue };
            let ready = f64::from(ready);
            let latency = |mean_s: Option<f64>| {
                mean_s
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .map(|s| LatencySummary { mean_ms: 1e3 * s, ..LatencySummary::default() })
            };
            // Queues that grow while requests wait: arrivals beyond completions.
            let growing = m.arrival_rps > 1.05 * m.completion_rps && m.waiting >= ready;
            evidence.served.insert(
                v.name.clone(),
                ServedStats {
                    window_s,
                    ready_replicas: ready,
                    arrival_rps: m.arrival_rps,
                    completion_rps: m.completion_rps,
                    finished: (m.completion_rps * window_s).round() as u64,
                    input_tokens: m.input_tokens,
                    output_tokens: m.output_tokens,
                    ttft: latency(m.ttft_mean_s),
                    itl: latency(m.itl_mean_s),
                    waiting_per_replica: m.waiting / ready,
                    saturated_fraction: if growing { 1.0 } else { 0.0 },
                    kv_usage_max: m.kv_usage_max,
                },
            );
        }
        self.startups_seen_until = Some(now);
        evidence
    }

    /// Record a variant left out of the plan.
    fn leave(
        &mut self,
        name: &str,
        va: &VariantAutoscaling,
        source: Option<&Source>,
        reason: &'static str,
        message: String,
    ) {
        let Some(source) = source else { return };
        let (namespace, object) = name.split_once('/').unwrap_or(("default", name));
        let object = match source {
            Source::Scaler { name, .. } => name.clone(),
            Source::Object { .. } => object.to_string(),
        };
        self.left.push(Left {
            namespace: namespace.to_string(),
            name: object,
            source: source.clone(),
            reason,
            message,
            generation: va.metadata.generation,
            conditions: va.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default(),
        });
    }

    /// Annotated HPAs and ScaledObjects, as variants. A target a VariantAutoscaling already scales
    /// is the VariantAutoscaling's; of a ScaledObject and an HPA on one target, the ScaledObject wins.
    fn annotated_scalers(
        &self,
        crd_targets: &BTreeSet<TargetKey>,
        warnings: &mut Vec<String>,
    ) -> Vec<(Scaler, Result<VariantAutoscaling, String>)> {
        let mut found: Vec<Result<Scaler, (String, String)>> = Vec::new();
        if let Some(sos) = &self.cache.scaled_objects {
            for so in sos.objects() {
                if let Some(r) = scaler_from_scaled_object(&so) {
                    found.push(
                        r.map_err(|e| (so.name_any(), e.to_string()))
                            .map_err(|(n, e)| (format!("ScaledObject {}/{n}", so.namespace().unwrap_or_default()), e)),
                    );
                }
            }
        }
        if let Some(hpas) = &self.cache.hpas {
            for hpa in hpas.objects() {
                if let Some(r) = scaler_from_hpa(&hpa) {
                    found.push(r.map_err(|e| {
                        (
                            format!(
                                "HorizontalPodAutoscaler {}/{}",
                                hpa.namespace().unwrap_or_default(),
                                hpa.name_any()
                            ),
                            e.to_string(),
                        )
                    }));
                }
            }
        }
        let mut claimed: BTreeSet<TargetKey> = crd_targets.clone();
        let mut out = Vec::new();
        // ScaledObjects first (sorted by kind), then by namespace and name: deterministic.
        let mut scalers: Vec<Scaler> = Vec::new();
        for r in found {
            match r {
                Ok(s) => scalers.push(s),
                Err((what, e)) => warnings.push(format!("{what} ignored: {e}")),
            }
        }
        scalers.sort_by_key(|s| (s.kind, s.namespace(), s.name()));
        for s in scalers {
            let key = s.target_key();
            if !claimed.insert(key.clone()) {
                warnings.push(format!(
                    "{} ignored: {} is already scaled by another variant",
                    s.describe(),
                    key.describe()
                ));
                continue;
            }
            let result = synthesize(&s).map_err(|e| e.to_string());
            out.push((s, result));
        }
        out
    }

    /// Load per model: fresh metrics, or the last good load (and a problem) when missing or stale.
    /// A model `at_zero` has no server to export metrics: missing or stale metrics are what it
    /// should have, and its load is none (plus what waits at the gateway), not a reason to hold.
    async fn collect_load(
        &mut self,
        vas: &[VariantAutoscaling],
        config: &ClusterConfig,
        at_zero: &BTreeSet<String>,
    ) -> Load {
        let models: Vec<String> =
            vas.iter().map(|va| va.spec.model_id.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let Some((_, source)) = &self.load else { return Load::default() };
        let (collected, gateway) = tokio::join!(source.collect(&models), source.gateway_waiting(&models));
        let limit_s = config.allot.metrics_staleness.as_secs_f64();
        let mut out = Load::default();
        match gateway {
            Ok(waiting) => out.gateway_waiting = waiting,
            Err(e) => out.gateway_problem = Some(e.to_string()),
        }
        for model in &models {
            let result = collected.get(model).cloned().unwrap_or_else(|| Err(MetricsProblem::Missing(model.clone())));
            // No series, or only old ones, is what a model at zero has. Prometheus itself failing
            // still holds it: the gateway's queue went unread with it.
            let absent = match &result {
                Ok(m) => m.age_s > limit_s,
                Err(p) => matches!(p, MetricsProblem::Missing(_) | MetricsProblem::Stale { .. }),
            };
            let result = if absent && at_zero.contains(model) {
                out.at_zero.insert(model.clone());
                Ok(scaled_to_zero(model, self.last_load.get(model)))
            } else {
                result
            };
            let fresh = match result {
                Ok(m) if m.age_s > limit_s => {
                    let problem = MetricsProblem::Stale { model: model.clone(), age_s: m.age_s, limit_s };
                    out.metrics.insert(model.clone(), m);
                    Err(problem)
                }
                Ok(m) => match to_load(&m, self.last_load.get(model)) {
                    Some(l) => {
                        out.metrics.insert(model.clone(), m);
                        Ok(l)
                    }
                    None => Err(MetricsProblem::Missing(format!("{model} (requests arrive but none finished yet)"))),
                },
                Err(p) => Err(p),
            };
            match fresh {
                Ok(l) => {
                    self.last_load.insert(model.clone(), l.clone());
                    out.loads.push(l);
                }
                Err(p) => {
                    if let Some(last) = self.last_load.get(model) {
                        out.loads.push(last.clone());
                    }
                    out.problems.insert(model.clone(), p);
                }
            }
        }
        self.last_load.retain(|m, _| models.contains(m));
        out
    }

    async fn apply_status(&self, namespace: &str, name: &str, status: serde_json::Value) -> Result<(), kube::Error> {
        // Untyped: the answer is the whole object, which need not deserialize (a bad spec is
        // exactly when Allot writes `Ready=False`).
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &super::cache::variant_autoscaling_resource());
        let body = serde_json::json!({
            "apiVersion": VariantAutoscaling::api_version(&()),
            "kind": VariantAutoscaling::kind(&()),
            "status": status,
        });
        api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await.map(|_| ())
    }

    async fn apply_decision(&mut self, decision: &Decision) -> Applied {
        let mut applied = Applied::default();
        if !self.leads() {
            return applied;
        }
        let now = self.now();
        let direct = self.config.as_ref().is_some_and(|c| c.allot.direct_scaling);
        for variant in &decision.variants {
            let Some(seen) = self.seen.get(&variant.name) else {
                applied
                    .errors
                    .push((variant.name.clone(), ActError::new(ActErrorKind::NotObserved, "not observed this cycle")));
                continue;
            };
            let desired = i32::try_from(variant.desired).unwrap_or(i32::MAX);
            // An annotated scaler owns its target's replicas: Allot only publishes for it.
            let scales_directly = direct && matches!(seen.source, Source::Object { .. });
            let mut reached = !scales_directly;
            if scales_directly {
                if seen.target_replicas == Some(desired) {
                    reached = true;
                } else {
                    let (resource, target) = &seen.target;
                    let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &seen.namespace, resource);
                    let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": desired}}));
                    let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
                    match api.patch_scale(target, &params, &patch).await {
                        Ok(_) => {
                            reached = true;
                            applied.scaled.push(variant.name.clone());
                        }
                        Err(e) => applied.errors.push((
                            variant.name.clone(),
                            ActError::new(
                                ActErrorKind::Scale,
                                format!("scaling {} {target} to {desired}: {}", resource.kind, short_error(&e)),
                            ),
                        )),
                    }
                }
            }
            if seen.published != Some(desired) {
                match self.event(seen, variant, now).await {
                    Ok(_) => {
                        if let Source::Scaler { .. } = seen.source {
                            self.published_scalers.insert(variant.name.clone(), desired);
                        }
                    }
                    Err(e) => applied.errors.push((
                        variant.name.clone(),
                        ActError::new(ActErrorKind::Event, format!("recording an event: {}", short_error(&e))),
                    )),
                }
            }
            if let Source::Object { .. } = seen.source {
                let status = status_for(decision, variant, &seen.facts, reached, now);
                let body = serde_json::to_value(&status).expect("statuses serialize");
                if let Err(e) = self.apply_status(&seen.namespace, &seen.name, body).await {
                    applied.errors.push((
                        variant.name.clone(),
                        ActError::new(ActErrorKind::Status, format!("writing status: {}", short_error(&e))),
                    ));
                }
            }
        }
        self.published_scalers.retain(|name, _| decision.variants.iter().any(|v| &v.name == name));
        for left in self.left.clone() {
            let name = format!("{}/{}", left.namespace, left.name);
            if let Err(e) = self.report_left(&left, now).await {
                applied.errors.push((name, e));
            }
        }
        applied
    }

    /// `Ready=False` and a Warning Event on a variant left out, when the reason is new.
    async fn report_left(&mut self, left: &Left, now: Timestamp) -> Result<(), ActError> {
        let message = format!("not planned: {}", left.message);
        let already = left.conditions.iter().any(|c| c.type_ == READY && c.status == "False" && c.message == message);
        match &left.source {
            Source::Object { uid, status } => {
                if already {
                    return Ok(());
                }
                let ready = stamped(&left.conditions, left.generation, READY, false, left.reason, message.clone(), now);
                self.apply_status(&left.namespace, &left.name, with_ready(status.as_ref(), &ready))
                    .await
                    .map_err(|e| ActError::new(ActErrorKind::Status, format!("writing status: {}", short_error(&e))))?;
                let regarding = object_reference(
                    VariantAutoscaling::api_version(&()).as_ref(),
                    VariantAutoscaling::kind(&()).as_ref(),
                    &left.namespace,
                    &left.name,
                    uid.clone(),
                );
                self.warning(&left.namespace, regarding, left.reason, &message, now)
                    .await
                    .map(|_| ())
                    .map_err(|e| ActError::new(ActErrorKind::Event, format!("recording an event: {}", short_error(&e))))
            }
            Source::Scaler { kind, name, uid } => {
                let key = format!("{}/{}/{name}", kind.kind(), left.namespace);
                if self.reported_scalers.get(&key) == Some(&message) {
                    return Ok(());
                }
                let regarding = object_reference(kind.api_version(), kind.kind(), &left.namespace, name, uid.clone());
                self.warning(&left.namespace, regarding, left.reason, &message, now).await.map_err(|e| {
                    ActError::new(ActErrorKind::Event, format!("recording an event: {}", short_error(&e)))
                })?;
                self.reported_scalers.insert(key, message);
                Ok(())
            }
        }
    }

    /// An Event on the variant's object (or its scaler): the desired replicas changed.
    async fn event(
        &self,
        seen: &Seen,
        variant: &crate::controller::VariantDecision,
        now: Timestamp,
    ) -> Result<Event, kube::Error> {
        let from = seen.published.map_or("none".to_string(), |n| n.to_string());
        let mut note = format!(
            "desired replicas {from} → {} on {} (running {}, plan {})",
            variant.desired, variant.accelerator, variant.current, variant.planned
        );
        if let Some(reason) = &variant.reason {
            note.push_str(&format!("; {reason}"));
        }
        let regarding = match &seen.source {
            Source::Object { uid, .. } => object_reference(
                VariantAutoscaling::api_version(&()).as_ref(),
                VariantAutoscaling::kind(&()).as_ref(),
                &seen.namespace,
                &seen.name,
                uid.clone(),
            ),
            Source::Scaler { kind, name, uid } => {
                object_reference(kind.api_version(), kind.kind(), &seen.namespace, name, uid.clone())
            }
        };
        let event =
            self.event_object(&seen.namespace, regarding, "Normal", "DesiredReplicasChanged", "Scale", note, now);
        Api::<Event>::namespaced(self.client.clone(), &seen.namespace).create(&PostParams::default(), &event).await
    }

    async fn warning(
        &self,
        namespace: &str,
        regarding: ObjectReference,
        reason: &str,
        note: &str,
        now: Timestamp,
    ) -> Result<Event, kube::Error> {
        let event = self.event_object(namespace, regarding, "Warning", reason, "Plan", note.to_string(), now);
        Api::<Event>::namespaced(self.client.clone(), namespace).create(&PostParams::default(), &event).await
    }

    #[allow(clippy::too_many_arguments)]
    fn event_object(
        &self,
        namespace: &str,
        regarding: ObjectReference,
        type_: &str,
        reason: &str,
        action: &str,
        note: String,
        now: Timestamp,
    ) -> Event {
        let object = regarding.name.clone().unwrap_or_default();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(action.into()),
            reason: Some(reason.into()),
            // The API server refuses notes over 1 kB.
            note: Some(note.chars().take(1000).collect()),
            type_: Some(type_.into()),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.scope.identity.clone()),
            regarding: Some(regarding),
            ..Event::default()
        }
    }
}

fn object_reference(
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid,
        ..ObjectReference::default()
    }
}

fn conditions_of(status: Option<&serde_json::Value>) -> Vec<Condition> {
    status.and_then(|s| s.get("conditions")).and_then(|c| serde_json::from_value(c.clone()).ok()).unwrap_or_default()
}

impl<L: LoadSource> Cluster for KubeCluster<L> {
    fn observe(&mut self) -> impl Future<Output = Result<Observed, ClusterError>> + Send {
        self.observe_cluster()
    }

    fn apply(&mut self, decision: &Decision) -> impl Future<Output = Applied> + Send {
        self.apply_decision(decision)
    }
}

/// This cycle's load: what the snapshot plans on, the raw metrics and the problems per model.
#[derive(Default)]
struct Load {
    loads: Vec<ModelLoad>,
    metrics: BTreeMap<String, ModelMetrics>,
    problems: BTreeMap<String, MetricsProblem>,
    /// Requests waiting at the gateway, per model that has some.
    gateway_waiting: BTreeMap<String, f64>,
    /// Why the gateway's queue could not be read (the plan goes on without it).
    gateway_problem: Option<String>,
    /// Models planned as scaled to zero: no replica, no server metrics.
    at_zero: BTreeSet<String>,
}

/// The metrics a model scaled to zero has: nothing arrives at a server, nothing runs. Token
/// sizes stay those last seen, so a wake-up plans for the requests the model had.
fn scaled_to_zero(model: &str, last: Option<&ModelLoad>) -> ModelMetrics {
    ModelMetrics {
        model: model.to_string(),
        arrival_rps: 0.0,
        completion_rps: 0.0,
        input_tokens: last.map(|l| l.input_tokens),
        output_tokens: last.map(|l| l.output_tokens),
        input_histogram: None,
        output_histogram: None,
        running: 0.0,
        waiting: 0.0,
        ttft_mean_s: None,
        itl_mean_s: None,
        kv_usage_max: None,
        age_s: 0.0,
    }
}

/// Metrics as planning load. Token means (and size histograms) come from the last good load
/// while no request finishes in the window; `None` when there are requests but no token means
/// at all. A histogram the size model cannot use is left out: the mean still plans.
fn to_load(m: &ModelMetrics, last: Option<&ModelLoad>) -> Option<ModelLoad> {
    let tokens = |now: Option<f64>, last: Option<f64>| now.filter(|t| t.is_finite() && *t >= 1.0).or(last);
    let input = tokens(m.input_tokens, last.map(|l| l.input_tokens));
    let output = tokens(m.output_tokens, last.map(|l| l.output_tokens));
    let (input_tokens, output_tokens) = match (input, output) {
        (Some(i), Some(o)) => (i, o),
        // No traffic: token means do not matter, any valid value plans the same.
        _ if m.arrival_rps <= 0.0 => (input.unwrap_or(1.0), output.unwrap_or(1.0)),
        _ => return None,
    };
    let input_histogram = usable_histogram(m.input_histogram.as_ref(), m.input_tokens)
        .or_else(|| last.and_then(|l| l.input_histogram.clone()));
    let output_histogram = usable_histogram(m.output_histogram.as_ref(), m.output_tokens)
        .or_else(|| last.and_then(|l| l.output_histogram.clone()));
    Some(ModelLoad {
        model: m.model.clone(),
        class: None,
        arrival_rate_rps: m.arrival_rps,
        input_tokens,
        output_tokens,
        input_histogram,
        output_histogram,
    })
}

/// A scraped histogram in the scenario's form, when the size model accepts it (with its sum from
/// the window's mean, so the distribution keeps the observed mean).
fn usable_histogram(h: Option<&TokenHistogram>, mean: Option<f64>) -> Option<HistogramSpec> {
    let h = h?;
    let sum = mean.filter(|m| m.is_finite() && *m >= 1.0).map(|m| m * h.count);
    SizeDistribution::from_histogram(&h.buckets, h.count, sum).ok()?;
    Some(HistogramSpec {
        buckets: h.buckets.iter().map(|&(le, count)| HistogramBucketSpec { le, count }).collect(),
        count: h.count,
        sum,
    })
}

fn counts(p: &VariantPods) -> PodCounts {
    PodCounts {
        ready: p.ready,
        booting: u32::try_from(p.booting.len()).unwrap_or(u32::MAX),
        unschedulable: p.unschedulable,
        gated: p.gated,
    }
}

/// The API resource of a scale target (`apps/v1` Deployment by default).
pub fn api_resource(target: &ScaleTargetRef) -> ApiResource {
    target_key("", target).resource()
}

/// An API error in one line: the server's message and code, not the whole response.
pub fn short_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// A calibration a previous controller wrote into status, when its numbers are usable (the
/// status is anyone's to edit: a factor that is not a positive finite number is ignored).
fn restorable(c: &crate::k8s::crd::CalibrationStatus) -> Option<RestoredCalibration> {
    let factor = |f: f64| f.is_finite() && f > 0.0;
    (factor(c.prefill_factor)
        && factor(c.decode_factor)
        && c.confidence.is_finite()
        && (0.0..=1.0).contains(&c.confidence)
        && !c.profile_digest.is_empty())
    .then(|| RestoredCalibration {
        prefill_factor: c.prefill_factor,
        decode_factor: c.decode_factor,
        confidence: c.confidence,
        profile_digest: c.profile_digest.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(rps: f64, input: Option<f64>, output: Option<f64>) -> ModelMetrics {
        ModelMetrics {
            model: "m".into(),
            arrival_rps: rps,
            completion_rps: rps,
            input_tokens: input,
            output_tokens: output,
            input_histogram: None,
            output_histogram: None,
            running: 0.0,
            waiting: 0.0,
            ttft_mean_s: None,
            itl_mean_s: None,
            kv_usage_max: None,
            age_s: 5.0,
        }
    }

    #[test]
    fn token_means_fall_back_to_the_last_good_load_and_never_invent_traffic_shape() {
        let fresh = to_load(&metrics(2.0, Some(1000.0), Some(200.0)), None).expect("complete metrics");
        assert_eq!((fresh.arrival_rate_rps, fresh.input_tokens, fresh.output_tokens), (2.0, 1000.0, 200.0));
        // No request finished in the window: the last means stand in.
        let later = to_load(&metrics(3.0, None, None), Some(&fresh)).expect("last means");
        assert_eq!((later.arrival_rate_rps, later.input_tokens, later.output_tokens), (3.0, 1000.0, 200.0));
        // Requests arrive but nothing is known about their length: no load rather than a guess.
        assert_eq!(to_load(&metrics(3.0, None, Some(200.0)), None), None);
        // No traffic at all: any token count plans the same.
        let idle = to_load(&metrics(0.0, None, None), None).expect("idle model");
        assert_eq!((idle.arrival_rate_rps, idle.input_tokens, idle.output_tokens), (0.0, 1.0, 1.0));
    }

    #[test]
    fn a_scraped_size_histogram_reaches_the_load_or_is_left_out() {
        let histogram = TokenHistogram { buckets: vec![(256.0, 1.0), (1024.0, 3.0), (4096.0, 3.9)], count: 4.0 };
        let m = ModelMetrics { input_histogram: Some(histogram), ..metrics(4.0, Some(800.0), Some(200.0)) };
        let load = to_load(&m, None).expect("load");
        let h = load.input_histogram.clone().expect("a usable histogram");
        assert_eq!((h.count, h.sum), (4.0, Some(3200.0)));
        assert_eq!(
            h.buckets.iter().map(|b| (b.le, b.count)).collect::<Vec<_>>(),
            vec![(256.0, 1.0), (1024.0, 3.0), (4096.0, 3.9)]
        );
        assert_eq!(load.output_histogram, None);
        // No request finished this window: the last histogram stays, like the means.
        let later = to_load(&metrics(3.0, None, None), Some(&load)).expect("load");
        assert_eq!(later.input_histogram, load.input_histogram);
        // Decreasing cumulative counts cannot be a distribution: planned on the mean alone.
        let broken = TokenHistogram { buckets: vec![(256.0, 3.0), (1024.0, 1.0)], count: 4.0 };
        let m = ModelMetrics { input_histogram: Some(broken), ..metrics(4.0, Some(800.0), Some(200.0)) };
        let load = to_load(&m, None).expect("the load survives");
        assert_eq!((load.input_histogram, load.input_tokens), (None, 800.0));
    }

    #[test]
    fn scale_targets_map_to_their_api_resources() {
        let target = |api_version: Option<&str>, kind: &str| ScaleTargetRef {
            api_version: api_version.map(str::to_string),
            kind: kind.into(),
            name: "x".into(),
        };
        let r = api_resource(&target(None, "Deployment"));
        assert_eq!((r.group.as_str(), r.version.as_str(), r.plural.as_str()), ("apps", "v1", "deployments"));
        let r = api_resource(&target(Some("apps/v1"), "StatefulSet"));
        assert_eq!(r.plural, "statefulsets");
        let r = api_resource(&target(Some("leaderworkerset.x-k8s.io/v1"), "LeaderWorkerSet"));
        assert_eq!((r.group.as_str(), r.plural.as_str()), ("leaderworkerset.x-k8s.io", "leaderworkersets"));
    }
}
