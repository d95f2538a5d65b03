//! [`KubeCluster`]: the controller's [`Cluster`] on a real Kubernetes API server.
//!
//! `observe` reads, in this order (the mocked API server in `tests/k8s_cluster.rs` checks it):
//! the four ConfigMaps, the VariantAutoscalings, the GPU Nodes, the Pods, each target's `scale`
//! subresource (its label selector and replicas), then load through the [`LoadSource`]. It
//! assembles a scenario with [`crate::observe::snapshot::assemble`] and validates it.
//!
//! `apply` does per variant: optional direct scaling through `scale`, an Event when the desired
//! replicas change, and a server-side apply of `/status`. A failure is recorded for that variant
//! and the others go on.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;

use super::config::{AllotConfig, ClusterConfig};
use super::crd::{ScaleTargetRef, VariantAutoscaling};
use super::selector::Selector;
use super::status::{VariantFacts, status_for};
use crate::controller::{Applied, Cluster, Decision, Observed, PodCounts, Tuning};
use crate::observe::inventory;
use crate::observe::pods::{VariantPods, summarize};
use crate::observe::snapshot::{ModelLoad, Observation, assemble, variant_name};
use crate::prometheus::{LoadSource, MetricsProblem, ModelMetrics};

/// Field manager of every write, so `kubectl get -o yaml --show-managed-fields` names Allot.
pub const FIELD_MANAGER: &str = "allot";
/// `reportingController` of Allot's Events.
pub const REPORTING_CONTROLLER: &str = "llmd.ai/allot";

/// Where the controller looks, and the names of its ConfigMaps.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    /// Only VariantAutoscalings of this namespace; all namespaces when `None`.
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
        }
    }
}

/// What the last observation found about one variant, for `apply`.
#[derive(Clone, Debug)]
struct Seen {
    namespace: String,
    name: String,
    uid: Option<String>,
    target: (ApiResource, String),
    /// The target's `spec.replicas` (what direct scaling compares with).
    target_replicas: Option<i32>,
    /// `status.desiredOptimizedAlloc.numReplicas` before this cycle (an Event marks changes).
    published: Option<i32>,
    facts: VariantFacts,
}

/// The controller's view of a Kubernetes cluster, with load from `L`.
pub struct KubeCluster<L: LoadSource> {
    client: Client,
    load: L,
    scope: Scope,
    /// The last configuration that parsed: a bad edit keeps it in force.
    config: Option<ClusterConfig>,
    /// The last good load per model, planned on while a model's metrics are missing.
    last_load: BTreeMap<String, ModelLoad>,
    seen: BTreeMap<String, Seen>,
    leader: Option<watch::Receiver<bool>>,
    clock: Box<dyn Fn() -> Timestamp + Send + Sync>,
}

impl<L: LoadSource> KubeCluster<L> {
    pub fn new(client: Client, load: L, scope: Scope) -> Self {
        Self {
            client,
            load,
            scope,
            config: None,
            last_load: BTreeMap::new(),
            seen: BTreeMap::new(),
            leader: None,
            clock: Box::new(Timestamp::now),
        }
    }

    /// Connect with the in-cluster service account, or `KUBECONFIG` / `~/.kube/config`.
    pub async fn connect(load: L, scope: Scope) -> anyhow::Result<Self> {
        let client = Client::try_default().await.context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
        Ok(Self::new(client, load, scope))
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

    /// Read and parse the ConfigMaps; a bad one keeps the last good configuration in force.
    async fn read_config(&mut self, warnings: &mut Vec<String>) -> anyhow::Result<ClusterConfig> {
        match (read_config(&self.client, &self.scope).await?, &self.config) {
            (Ok(config), _) => {
                self.config = Some(config.clone());
                Ok(config)
            }
            (Err(e), Some(last)) => {
                tracing::warn!(error = %e, "configuration rejected; the last good one stays in force");
                warnings.push(format!("{e}\n(the last good configuration stays in force)"));
                Ok(last.clone())
            }
            (Err(e), None) => Err(anyhow::anyhow!(e)),
        }
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    async fn observe_cluster(&mut self) -> anyhow::Result<Observed> {
        let now = self.now();
        let mut warnings = Vec::new();
        let config = self.read_config(&mut warnings).await?;

        let va_api: Api<VariantAutoscaling> = match &self.scope.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut vas = va_api.list(&ListParams::default()).await.context("cannot list VariantAutoscalings")?.items;
        vas.retain(|va| va.metadata.deletion_timestamp.is_none());
        vas.sort_by_key(variant_name);
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .context("cannot list Nodes")?
            .items;
        // All namespaces: other workloads' GPUs are subtracted wherever they run.
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
            .await
            .context("cannot list Pods")?
            .items;

        // Each variant's target: replicas and the selector of its pods.
        let mut targets: BTreeMap<String, (ScaleTargetRef, ApiResource, Option<i32>, Selector)> = BTreeMap::new();
        let mut unusable: BTreeSet<String> = BTreeSet::new();
        for va in &vas {
            let name = variant_name(va);
            let ns = va.namespace().unwrap_or_else(|| "default".into());
            let target = va.spec.scale_target(&va.name_any());
            let resource = api_resource(&target);
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &resource);
            let scale = match api.get_scale(&target.name).await {
                Ok(s) => s,
                Err(e) => {
                    warnings.push(format!(
                        "VariantAutoscaling {name} skipped: cannot read the scale of {} {ns}/{}: {}",
                        target.kind,
                        target.name,
                        short_error(&e)
                    ));
                    unusable.insert(name);
                    continue;
                }
            };
            let selector_text = scale.status.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
            let selector = match Selector::parse(&selector_text) {
                Ok(s) if !s.is_empty() => s,
                Ok(_) => {
                    warnings.push(format!("VariantAutoscaling {name} skipped: its target reports no pod selector"));
                    unusable.insert(name);
                    continue;
                }
                Err(e) => {
                    warnings.push(format!("VariantAutoscaling {name} skipped: {e}"));
                    unusable.insert(name);
                    continue;
                }
            };
            let replicas = scale.spec.as_ref().and_then(|s| s.replicas);
            targets.insert(name, (target, resource, replicas, selector));
        }
        vas.retain(|va| !unusable.contains(&variant_name(va)));

        // Pods per variant, by the target's selector within the variant's namespace.
        let pods_of = |name: &str, ns: &str| -> Vec<Pod> {
            let Some((_, _, _, selector)) = targets.get(name) else { return Vec::new() };
            pods.iter()
                .filter(|p| p.metadata.namespace.as_deref() == Some(ns) && selector.matches(p.labels()))
                .cloned()
                .collect()
        };
        let mut variant_pods: BTreeMap<String, VariantPods> = BTreeMap::new();
        let mut pod_owner: BTreeMap<(String, String), String> = BTreeMap::new();
        for va in &vas {
            let name = variant_name(va);
            let ns = va.namespace().unwrap_or_else(|| "default".into());
            let mine = pods_of(&name, &ns);
            for p in &mine {
                let key = (ns.clone(), p.name_any());
                if let Some(other) = pod_owner.insert(key.clone(), name.clone()) {
                    warnings.push(format!("pod {}/{} is selected by both {other} and {name}", key.0, key.1));
                }
            }
            variant_pods.insert(name, summarize(&mine, now, va.spec.startup_seconds));
        }

        let load = self.collect_load(&vas, &config).await;
        // Pods of variants left out of the plan hold GPUs like any other workload's: assemble,
        // then count again without the skipped variants' pods when some were skipped.
        let mut planned: BTreeSet<String> = vas.iter().map(variant_name).collect();
        let assembly = loop {
            let managed = |p: &Pod| {
                let key = (p.namespace().unwrap_or_default(), p.name_any());
                pod_owner.get(&key).is_some_and(|owner| planned.contains(owner))
            };
            let inv = inventory::observe(&nodes, &pods, &config.allot.tolerated_taint_keys, managed);
            let assembly = assemble(&Observation {
                variants: &vas,
                config: &config,
                inventory: &inv,
                pods: &variant_pods,
                load: &load.loads,
            });
            let skipped: BTreeSet<String> = assembly.skipped.iter().map(|s| s.variant.clone()).collect();
            if skipped.iter().all(|s| !planned.contains(s)) {
                break assembly;
            }
            planned.retain(|v| !skipped.contains(v));
        };
        for s in &assembly.skipped {
            warnings.push(format!("VariantAutoscaling {} skipped: {}", s.variant, s.reason));
        }
        warnings.extend(assembly.warnings.iter().cloned());
        let snapshot = assembly.validate().context("the observed cluster is not a valid scenario")?;

        // What apply needs later, by variant name.
        self.seen.clear();
        let mut pod_counts = Vec::with_capacity(snapshot.variants.len());
        for v in &snapshot.variants {
            let counts = variant_pods.get(&v.name).map(counts).unwrap_or_default();
            pod_counts.push(counts);
            let Some(va) = vas.iter().find(|va| variant_name(va) == v.name) else { continue };
            let Some((target, resource, replicas, _)) = targets.get(&v.name) else { continue };
            let model = &snapshot.models[v.model].name;
            let accelerator = &snapshot.accelerators[v.accelerator].name;
            let status = va.status.as_ref();
            self.seen.insert(
                v.name.clone(),
                Seen {
                    namespace: va.namespace().unwrap_or_else(|| "default".into()),
                    name: va.name_any(),
                    uid: va.metadata.uid.clone(),
                    target: (resource.clone(), target.name.clone()),
                    target_replicas: *replicas,
                    published: status.and_then(|s| s.desired_optimized_alloc.as_ref()).map(|d| d.num_replicas),
                    facts: VariantFacts {
                        generation: va.metadata.generation,
                        conditions: status.map(|s| s.conditions.clone()).unwrap_or_default(),
                        gpus_per_replica: v.gpus_per_replica,
                        max_batch: v.max_batch,
                        unit_cost: config.accelerator(accelerator).map_or(0.0, |a| a.cost),
                        metrics: load.metrics.get(model).cloned(),
                        problem: load.problems.get(model).cloned(),
                    },
                },
            );
        }
        Ok(Observed {
            at_s: now.as_millisecond() as f64 / 1000.0,
            scenario: assembly.scenario,
            snapshot,
            pods: pod_counts,
            stale_models: load.problems.iter().map(|(m, p)| (m.clone(), p.to_string())).collect(),
            metric_age_s: load.metrics.iter().map(|(m, x)| (m.clone(), x.age_s)).collect(),
            warnings,
            tuning: Some(Tuning { interval: config.allot.cycle_interval, behavior: config.allot.behavior.clone() }),
        })
    }

    /// Load per model: fresh metrics, or the last good load (and a problem) when missing or stale.
    async fn collect_load(&mut self, vas: &[VariantAutoscaling], config: &ClusterConfig) -> Load {
        let models: Vec<String> =
            vas.iter().map(|va| va.spec.model_id.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let collected = self.load.collect(&models).await;
        let limit_s = config.allot.metrics_staleness.as_secs_f64();
        let mut out = Load::default();
        for model in &models {
            let result = collected.get(model).cloned().unwrap_or_else(|| Err(MetricsProblem::Missing(model.clone())));
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

    async fn apply_decision(&mut self, decision: &Decision) -> Applied {
        let mut applied = Applied::default();
        if self.leader.as_ref().is_some_and(|rx| !*rx.borrow()) {
            return applied;
        }
        let now = self.now();
        let direct = self.config.as_ref().is_some_and(|c| c.allot.direct_scaling);
        for variant in &decision.variants {
            let Some(seen) = self.seen.get(&variant.name) else {
                applied.errors.push((variant.name.clone(), "not observed this cycle".into()));
                continue;
            };
            let desired = i32::try_from(variant.desired).unwrap_or(i32::MAX);
            let mut reached = !direct;
            if direct {
                if seen.target_replicas == Some(desired) {
                    reached = true;
                } else {
                    let (resource, target) = &seen.target;
                    let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &seen.namespace, resource);
                    let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": desired}}));
                    match api.patch_scale(target, &PatchParams::default(), &patch).await {
                        Ok(_) => {
                            reached = true;
                            applied.scaled.push(variant.name.clone());
                        }
                        Err(e) => applied.errors.push((
                            variant.name.clone(),
                            format!("scaling {} {target} to {desired}: {}", resource.kind, short_error(&e)),
                        )),
                    }
                }
            }
            if seen.published != Some(desired)
                && let Err(e) = self.event(seen, variant, now).await
            {
                applied.errors.push((variant.name.clone(), format!("recording an event: {}", short_error(&e))));
            }
            let status = status_for(decision, variant, &seen.facts, reached, now);
            let api: Api<VariantAutoscaling> = Api::namespaced(self.client.clone(), &seen.namespace);
            let body = serde_json::json!({
                "apiVersion": VariantAutoscaling::api_version(&()),
                "kind": VariantAutoscaling::kind(&()),
                "status": status,
            });
            if let Err(e) =
                api.patch_status(&seen.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await
            {
                applied.errors.push((variant.name.clone(), format!("writing status: {}", short_error(&e))));
            }
        }
        applied
    }

    /// An Event on the VariantAutoscaling: the desired replicas changed.
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
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{:x}", seen.name, now.as_nanosecond())),
                namespace: Some(seen.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Scale".into()),
            reason: Some("DesiredReplicasChanged".into()),
            note: Some(note),
            type_: Some("Normal".into()),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.scope.identity.clone()),
            regarding: Some(ObjectReference {
                api_version: Some(VariantAutoscaling::api_version(&()).into()),
                kind: Some(VariantAutoscaling::kind(&()).into()),
                name: Some(seen.name.clone()),
                namespace: Some(seen.namespace.clone()),
                uid: seen.uid.clone(),
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &seen.namespace).create(&PostParams::default(), &event).await
    }
}

impl<L: LoadSource> Cluster for KubeCluster<L> {
    fn observe(&mut self) -> impl Future<Output = anyhow::Result<Observed>> + Send {
        self.observe_cluster()
    }

    fn apply(&mut self, decision: &Decision) -> impl Future<Output = Applied> + Send {
        self.apply_decision(decision)
    }
}

/// Read and parse the ConfigMaps of `scope`: an API error is `Err`; a configuration that does
/// not parse is `Ok(Err(why))`, naming the ConfigMap, key and field. Call it at start-up to get
/// the Prometheus settings before building the load source.
pub async fn read_config(client: &Client, scope: &Scope) -> anyhow::Result<Result<ClusterConfig, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &scope.config_namespace);
    let mut data = Vec::new();
    for name in [&scope.accelerator_costs, &scope.service_classes, &scope.wva_controller, &scope.allot] {
        let cm = api
            .get_opt(name)
            .await
            .with_context(|| format!("cannot read ConfigMap {}/{name}", scope.config_namespace))?;
        data.push(cm.map(|c| c.data.unwrap_or_default()));
    }
    let required = |i: usize, name: &str| {
        data[i].clone().ok_or_else(|| format!("ConfigMap {}/{name} not found", scope.config_namespace))
    };
    Ok(match (required(0, &scope.accelerator_costs), required(1, &scope.service_classes)) {
        (Ok(costs), Ok(classes)) => {
            ClusterConfig::parse(&scope.defaults, &costs, &classes, data[2].as_ref(), data[3].as_ref())
                .map_err(|e| e.to_string())
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    })
}

/// This cycle's load: what the snapshot plans on, the raw metrics and the problems per model.
#[derive(Default)]
struct Load {
    loads: Vec<ModelLoad>,
    metrics: BTreeMap<String, ModelMetrics>,
    problems: BTreeMap<String, MetricsProblem>,
}

/// Metrics as planning load. Token means come from the last good load while no request
/// finishes in the window; `None` when there are requests but no token means at all.
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
    Some(ModelLoad {
        model: m.model.clone(),
        class: None,
        arrival_rate_rps: m.arrival_rps,
        input_tokens,
        output_tokens,
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
    let api_version = target.api_version.as_deref().unwrap_or("apps/v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &target.kind))
}

/// An API error in one line: the server's message and code, not the whole response.
fn short_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
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
            running: 0.0,
            waiting: 0.0,
            ttft_mean_s: None,
            itl_mean_s: None,
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
