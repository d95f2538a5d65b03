//! The controller behind `allot serve`: against a simulated cluster (`--simulate`: reads the
//! scenario and trace files, starts the engine thread and the loop) or against a Kubernetes
//! cluster (`--cluster`: reads the ConfigMaps, starts the Prometheus collector, leader election,
//! watches that ask for a prompt re-plan, and the loop). The REST API and metrics are the same.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt as _;
use kube::runtime::watcher;

use crate::k8s::crd::VariantAutoscaling;

use super::bounds::{Count, Number};
use crate::controller::run::LoopSettings;
use crate::controller::{Behavior, Shared, Stabilizer};
use crate::scenario;
use crate::sim::SimConfig;
use crate::sim::live::{LiveCluster, LiveSettings, synthetic_requests};
use crate::sim::trace;

/// The `--simulate` value naming the bundled example scenario.
pub const BUNDLED: &str = "bundled";

/// Settings of the simulated cluster behind `allot serve --simulate`.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateServeArgs {
    /// Replay this trace (Azure or BurstGPT CSV, Mooncake or Allot JSONL; the format is detected)
    /// instead of synthetic traffic at the scenario's load.
    #[arg(long, requires = "simulate")]
    pub trace: Option<PathBuf>,
    /// Multiply the trace's request rate (0 < x ≤ 1000).
    #[arg(long, default_value_t = 1.0, requires = "simulate", allow_negative_numbers = true, value_parser = RATE_SCALE)]
    pub rate_scale: f64,
    /// Simulated seconds per wall-clock second (0 < x ≤ 10000).
    #[arg(long, default_value_t = 10.0, requires = "simulate", allow_negative_numbers = true, value_parser = SPEED)]
    pub speed: f64,
    /// Length of synthetic traffic, simulated seconds (0 < s ≤ 2592000, 30 days).
    #[arg(long, default_value_t = 24.0 * 3600.0, requires = "simulate", allow_negative_numbers = true, value_parser = DURATION_S)]
    pub duration_s: f64,
    /// Controller interval, simulated seconds (1 ≤ s ≤ 86400); at least 10 ms of wall-clock
    /// time at the chosen --speed.
    #[arg(long, default_value_t = 30.0, requires = "simulate", allow_negative_numbers = true, value_parser = INTERVAL_S)]
    pub interval_s: f64,
    /// Replica start-up time, simulated seconds (0 ≤ s ≤ 86400).
    #[arg(long, default_value_t = 120.0, requires = "simulate", allow_negative_numbers = true, value_parser = STARTUP_S)]
    pub startup_s: f64,
    /// Stop after this many controller cycles (1 to 10^9; default: run until interrupted).
    #[arg(long, requires = "simulate", allow_negative_numbers = true, value_parser = Count(1..=1_000_000_000))]
    pub cycles: Option<u64>,
}

/// Bounds of the `--simulate` flags (checked by clap, and by [`SimulateServeArgs::check`] for
/// settings built in code).
const RATE_SCALE: Number = Number::above(0.0, 1000.0);
const SPEED: Number = Number::above(0.0, 10_000.0);
const DURATION_S: Number = Number::above(0.0, 30.0 * 86_400.0);
const INTERVAL_S: Number = Number::within(1.0, 86_400.0);
const STARTUP_S: Number = Number::within(0.0, 86_400.0);
/// Shortest wall-clock time between two controller cycles (`--interval-s / --speed`).
const MIN_WALL_INTERVAL_S: f64 = 0.01;
/// Most synthetic requests generated up front (about 32 bytes each).
const MAX_SYNTHETIC_REQUESTS: f64 = 20e6;

impl SimulateServeArgs {
    /// Every setting within its bounds, and the combinations that would busy-loop or exhaust
    /// memory refused, each with the flag named.
    pub fn check(&self) -> Result<(), String> {
        RATE_SCALE.check("--rate-scale", self.rate_scale)?;
        SPEED.check("--speed", self.speed)?;
        DURATION_S.check("--duration-s", self.duration_s)?;
        INTERVAL_S.check("--interval-s", self.interval_s)?;
        STARTUP_S.check("--startup-s", self.startup_s)?;
        let wall_s = self.interval_s / self.speed;
        if wall_s < MIN_WALL_INTERVAL_S {
            return Err(format!(
                "--interval-s {} at --speed {} is a cycle every {wall_s} s of wall-clock time; at least {MIN_WALL_INTERVAL_S} s",
                self.interval_s, self.speed
            ));
        }
        Ok(())
    }
}

impl Default for SimulateServeArgs {
    fn default() -> Self {
        Self {
            trace: None,
            rate_scale: 1.0,
            speed: 10.0,
            duration_s: 24.0 * 3600.0,
            interval_s: 30.0,
            startup_s: 120.0,
            cycles: None,
        }
    }
}

/// Read the scenario ([`BUNDLED`]: the bundled example) and the trace, and start the engine thread.
pub fn start_simulation(path: &Path, args: &SimulateServeArgs) -> anyhow::Result<LiveCluster> {
    let (text, source) = if path.as_os_str() == BUNDLED {
        (super::DEFAULT_SCENARIO.to_string(), "bundled example".to_string())
    } else {
        (
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        )
    };
    let parsed = scenario::parse(&text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let snapshot = scenario::validate(&parsed).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    args.check().map_err(anyhow::Error::msg)?;
    let requests = match &args.trace {
        None => {
            let total_rps: f64 = snapshot.models.iter().flat_map(|m| &m.demands).map(|d| d.arrival_rps).sum();
            let expected = total_rps * args.duration_s;
            if expected > MAX_SYNTHETIC_REQUESTS {
                anyhow::bail!(
                    "--duration-s {} at the scenario's {total_rps:.1} req/s is {expected:.3e} requests; at most {MAX_SYNTHETIC_REQUESTS:.0} (a shorter --duration-s, or a --trace)",
                    args.duration_s
                );
            }
            synthetic_requests(&snapshot, args.duration_s, 3600.0, 0.5, 1)
        }
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            let parsed = trace::parse(&text, None, None).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for note in &parsed.notes {
                tracing::info!(trace = %file.display(), "{note}");
            }
            for warning in trace::plausibility(&parsed.requests) {
                tracing::warn!(trace = %file.display(), "{warning}");
            }
            let window = trace::Window { start_s: 0.0, duration_s: None, rate_scale: args.rate_scale };
            trace::assign(&trace::select(&parsed.requests, &window), &snapshot, &[], 1)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
        }
    };
    tracing::info!(source = %source, requests = requests.len(), speed = args.speed, "starting the simulated cluster");
    let config = SimConfig {
        startup_s: args.startup_s,
        // The engine publishes every 5 simulated seconds; the controller runs on its own interval.
        control_period_s: 5.0,
        metric_lag_s: 0.0,
        ..SimConfig::default()
    };
    LiveCluster::start(parsed, requests, LiveSettings { speed: args.speed, config }).map_err(anyhow::Error::msg)
}

/// The controller loop over the simulated cluster (sole writer: no leader election).
pub async fn run_controller(
    cluster: LiveCluster,
    shared: Arc<Shared>,
    args: SimulateServeArgs,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (_leader_tx, leader) = tokio::sync::watch::channel(true);
    let settings =
        LoopSettings { interval: Duration::from_secs_f64(args.interval_s / args.speed), max_cycles: args.cycles };
    crate::controller::run::run(cluster, shared, settings, Stabilizer::new(Behavior::default()), leader, shutdown)
        .await;
}

/// Start the controller against the Kubernetes cluster (in-cluster config, else KUBECONFIG):
/// configuration from the ConfigMaps, load from Prometheus, leader election on a Lease, and a
/// prompt re-plan whenever a VariantAutoscaling's spec or a configuration ConfigMap changes.
pub async fn start_cluster_controller(
    args: crate::k8s::ControllerArgs,
    shared: Arc<Shared>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use crate::k8s::{KubeCluster, LeaderElector, read_config};
    use crate::prometheus::PrometheusCollector;
    let scope = args.scope();
    let client = kube::Client::try_default().await.context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    // Prometheus settings come from the ConfigMaps (and flags): read them before the collector.
    let config = read_config(&client, &scope).await?.map_err(anyhow::Error::msg)?;
    let (settings, notes) = args
        .prometheus(&config.allot.prometheus)
        .collector_settings(config.allot.metrics_staleness)
        .map_err(anyhow::Error::msg)?;
    for note in notes {
        tracing::warn!("{note}");
    }
    let load = PrometheusCollector::new(&settings).map_err(|e| anyhow::anyhow!("Prometheus settings: {e}"))?;

    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let elector = LeaderElector::new(client.clone(), args.lease());
    let mut stop = shutdown.clone();
    tokio::spawn(elector.run(leader_tx, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    tokio::spawn(watch_for_changes(client.clone(), scope.clone(), shared.clone()));

    let cluster = KubeCluster::new(client, load, scope).with_leadership(leader_rx.clone());
    let settings = LoopSettings { interval: config.allot.cycle_interval, max_cycles: None };
    let stabilizer = Stabilizer::new(config.allot.behavior.clone());
    tracing::info!(interval_s = settings.interval.as_secs_f64(), "controller started against the cluster");
    Ok(tokio::spawn(crate::controller::run::run(cluster, shared, settings, stabilizer, leader_rx, shutdown)))
}

/// Ask for a re-plan when a VariantAutoscaling's spec changes (its generation: Allot's own status
/// writes do not count) or one of the configuration ConfigMaps changes.
async fn watch_for_changes(client: kube::Client, scope: crate::k8s::Scope, shared: Arc<Shared>) {
    use futures::StreamExt as _;
    use kube::Api;
    use kube::runtime::{WatchStreamExt as _, watcher};

    let variants: Api<VariantAutoscaling> = match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &scope.config_namespace);
    let names = [&scope.accelerator_costs, &scope.service_classes, &scope.wva_controller, &scope.allot]
        .map(|n| n.to_string())
        .to_vec();

    let va_changes = async {
        let mut seen = ReplanFilter::default();
        let mut stream = watcher(variants, watcher::Config::default()).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) if seen.variant_event(&event) => shared.request_replan(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching VariantAutoscalings"),
            }
        }
    };
    let config_changes = async {
        let mut seen = ReplanFilter::default();
        let mut stream = watcher(config_maps, watcher::Config::default()).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) if seen.config_event(&event, &names) => {
                    tracing::info!("configuration changed");
                    shared.request_replan();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "watching configuration ConfigMaps"),
            }
        }
    };
    tokio::join!(va_changes, config_changes);
}

/// Which watch events ask for a prompt re-plan.
#[derive(Debug, Default)]
struct ReplanFilter {
    /// `metadata.generation` per VariantAutoscaling uid.
    generations: BTreeMap<String, Option<i64>>,
    /// The initial listing is over (ConfigMaps: earlier events are the state, not changes).
    listed: bool,
}

impl ReplanFilter {
    /// A new spec generation or a deletion asks; the initial listing and status writes (which do
    /// not move the generation) do not.
    fn variant_event(&mut self, event: &watcher::Event<VariantAutoscaling>) -> bool {
        match event {
            watcher::Event::InitApply(va) => {
                self.generations.insert(va.uid().unwrap_or_default(), va.metadata.generation);
                false
            }
            watcher::Event::Apply(va) => {
                self.generations.insert(va.uid().unwrap_or_default(), va.metadata.generation)
                    != Some(va.metadata.generation)
            }
            watcher::Event::Delete(va) => {
                self.generations.remove(&va.uid().unwrap_or_default());
                true
            }
            watcher::Event::Init | watcher::Event::InitDone => false,
        }
    }

    /// A change to one of the named ConfigMaps after the initial listing asks.
    fn config_event(&mut self, event: &watcher::Event<ConfigMap>, names: &[String]) -> bool {
        match event {
            watcher::Event::InitDone => {
                self.listed = true;
                false
            }
            watcher::Event::Apply(cm) | watcher::Event::Delete(cm) => {
                self.listed && names.iter().any(|n| *n == cm.name_any())
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn va(uid: &str, generation: i64) -> VariantAutoscaling {
        let spec = serde_json::from_value(serde_json::json!({
            "modelID": "m",
            "sloClassRef": {"name": "service-classes-config", "key": "premium"},
            "modelProfile": {"accelerators": []}
        }))
        .expect("a minimal spec");
        let mut va = VariantAutoscaling::new("v", spec);
        va.metadata = ObjectMeta { uid: Some(uid.into()), generation: Some(generation), ..ObjectMeta::default() };
        va
    }

    fn config_map(name: &str) -> ConfigMap {
        ConfigMap { metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() }, ..ConfigMap::default() }
    }

    #[test]
    fn spec_changes_and_deletions_ask_for_a_replan_status_writes_do_not() {
        let mut f = ReplanFilter::default();
        assert!(!f.variant_event(&watcher::Event::Init));
        assert!(!f.variant_event(&watcher::Event::InitApply(va("a", 1))));
        assert!(!f.variant_event(&watcher::Event::InitDone));
        // Allot's own status patch: same generation.
        assert!(!f.variant_event(&watcher::Event::Apply(va("a", 1))));
        // A user edits the spec.
        assert!(f.variant_event(&watcher::Event::Apply(va("a", 2))));
        // A new variant appears.
        assert!(f.variant_event(&watcher::Event::Apply(va("b", 1))));
        assert!(f.variant_event(&watcher::Event::Delete(va("a", 2))));
    }

    #[test]
    fn only_edits_of_the_named_config_maps_after_the_listing_ask() {
        let names = vec!["allot-config".to_string(), "accelerator-unit-costs".to_string()];
        let mut f = ReplanFilter::default();
        assert!(!f.config_event(&watcher::Event::InitApply(config_map("allot-config")), &names));
        assert!(!f.config_event(&watcher::Event::Apply(config_map("allot-config")), &names), "still listing");
        assert!(!f.config_event(&watcher::Event::InitDone, &names));
        assert!(f.config_event(&watcher::Event::Apply(config_map("allot-config")), &names));
        assert!(f.config_event(&watcher::Event::Delete(config_map("accelerator-unit-costs")), &names));
        assert!(!f.config_event(&watcher::Event::Apply(config_map("kube-root-ca.crt")), &names));
    }
}
