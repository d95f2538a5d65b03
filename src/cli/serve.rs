//! `allot serve`, the composition root: it wires the REST API, the controller loop (against a
//! simulated cluster with `--simulate`, or Kubernetes with `--cluster`), leader election and one
//! shutdown signal. Adapters take plain settings built here from the command line.
//!
//! Shutdown (SIGTERM, as the kubelet sends on every rollout, or SIGINT): the HTTP server stops
//! accepting and finishes its requests, the loop finishes its cycle and stops, then the elector
//! releases the Lease so another replica takes over at once (and acts at once: a new leader
//! runs a cycle when it acquires), and the process exits 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;

use clap::builder::TypedValueParser as _;

use super::bounds::{Count, KubeName, Number, Text};
use crate::api::ApiSettings;
use crate::controller::run::LoopSettings;
use crate::controller::{Behavior, Shared, Stabilizer};
use crate::k8s::config::{self, AllotConfig, ClusterConfig, PrometheusConfig, parse_duration};
use crate::k8s::{DEFAULT_LEASE_NAME, KubeCluster, LeaderElector, LeaseSettings, LoadFactory, Scope};
use crate::prometheus::{LoadSource, PrometheusCollector};
use crate::scenario;
use crate::sim::SimConfig;
use crate::sim::live::{LiveCluster, LiveSettings, synthetic_requests};
use crate::sim::trace;
use crate::telemetry::LogFormat;

/// Settings of `allot serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ALLOT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest accepted request body, bytes (1 to 67108864, the scenario size limit).
    #[arg(long, env = "ALLOT_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024,
          allow_negative_numbers = true, value_parser = Count(1..=scenario::MAX_SCENARIO_BYTES as u64).map(|n| n as usize))]
    pub max_body_bytes: usize,
    /// Wall-clock deadline of one plan request, seconds (0.1 to 3600); the solver's time limit
    /// is capped below it.
    #[arg(long, env = "ALLOT_PLAN_DEADLINE_S", default_value_t = 30.0, allow_negative_numbers = true,
          value_parser = PLAN_DEADLINE_S)]
    pub plan_deadline_s: f64,
    /// Plans computed at once (1 to 64); further requests get 503 until one finishes.
    #[arg(long, env = "ALLOT_MAX_CONCURRENT_PLANS", default_value_t = 2,
          allow_negative_numbers = true, value_parser = Count(1..=64).map(|n| n as usize))]
    pub max_concurrent_plans: usize,
    /// Run the controller loop against a simulated cluster of this scenario (the bundled
    /// heterogeneous fleet when no file is given, or `bundled`): simulated pods and metrics in
    /// place of Kubernetes and Prometheus.
    #[arg(long, value_name = "SCENARIO", num_args = 0..=1, default_missing_value = BUNDLED)]
    pub simulate: Option<PathBuf>,
    #[command(flatten)]
    pub sim: SimulateServeArgs,
    /// Run the controller loop against the Kubernetes cluster (in-cluster configuration, else
    /// KUBECONFIG): VariantAutoscalings, nodes, pods, Prometheus; acts while holding the lease.
    #[arg(long, conflicts_with = "simulate")]
    pub cluster: bool,
    #[command(flatten)]
    pub kube: ControllerArgs,
    /// Log line format.
    #[arg(long, env = "ALLOT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (`info`, `allot=debug,kube=warn`); `RUST_LOG` wins when set.
    #[arg(long, env = "ALLOT_LOG_LEVEL", default_value = "info", value_parser = crate::telemetry::parse_log_filter)]
    pub log_level: String,
}

/// Bounds of `--plan-deadline-s`.
const PLAN_DEADLINE_S: Number = Number::within(0.1, 3600.0);

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 4 * 1024 * 1024,
            plan_deadline_s: 30.0,
            max_concurrent_plans: 2,
            simulate: None,
            sim: SimulateServeArgs::default(),
            cluster: false,
            kube: ControllerArgs::default(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

impl ServeArgs {
    /// The REST API's limits.
    pub fn api_settings(&self) -> ApiSettings {
        ApiSettings {
            max_body_bytes: self.max_body_bytes,
            plan_deadline_s: self.plan_deadline_s,
            max_concurrent_plans: self.max_concurrent_plans,
        }
    }
}

/// Command-line and environment settings of the controller in a cluster. Settings in
/// `allot-config` (interval, direct scaling) override these defaults at run time; Prometheus
/// settings given here override the ConfigMaps.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct ControllerArgs {
    /// Only VariantAutoscalings (and annotated HPAs/ScaledObjects) of this namespace. Default:
    /// all namespaces.
    #[arg(long, env = "ALLOT_WATCH_NAMESPACE", value_parser = KubeName::Namespace)]
    pub watch_namespace: Option<String>,
    /// Namespace of the ConfigMaps (WVA's, so an existing installation keeps its configuration).
    #[arg(long, env = "ALLOT_CONFIG_NAMESPACE", default_value = config::WVA_NAMESPACE, value_parser = KubeName::Namespace)]
    pub config_namespace: String,
    /// Name of WVA's accelerator price list.
    #[arg(long, env = "ALLOT_ACCELERATOR_COSTS_CONFIGMAP", default_value = config::ACCELERATOR_COSTS_CONFIG_MAP,
          value_parser = KubeName::Object)]
    pub accelerator_costs_configmap: String,
    /// Name of WVA's service classes.
    #[arg(long, env = "ALLOT_SERVICE_CLASSES_CONFIGMAP", default_value = config::SERVICE_CLASSES_CONFIG_MAP,
          value_parser = KubeName::Object)]
    pub service_classes_configmap: String,
    /// Name of WVA's controller settings (optional ConfigMap).
    #[arg(long, env = "ALLOT_WVA_CONFIGMAP", default_value = config::WVA_CONTROLLER_CONFIG_MAP, value_parser = KubeName::Object)]
    pub wva_configmap: String,
    /// Name of Allot's own settings (optional ConfigMap, key `config.yaml`).
    #[arg(long, env = "ALLOT_CONFIGMAP", default_value = config::ALLOT_CONFIG_MAP, value_parser = KubeName::Object)]
    pub allot_configmap: String,
    /// Prometheus base URL (overrides the ConfigMaps).
    #[arg(long, env = "PROMETHEUS_URL", value_parser = super::bounds::http_url)]
    pub prometheus_url: Option<String>,
    /// CA bundle to verify Prometheus's certificate.
    #[arg(long, env = "PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Do not verify Prometheus's certificate (testing only).
    #[arg(long, env = "PROMETHEUS_INSECURE_SKIP_VERIFY", value_parser = clap::builder::BoolishValueParser::new())]
    pub prometheus_insecure: bool,
    /// File holding a bearer token for Prometheus (a mounted Secret or projected token).
    #[arg(long, env = "PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// Planning cycle (`30s`, `1m`).
    #[arg(long, env = "ALLOT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Patch each target's `scale` subresource directly, not only publish
    /// `allot_desired_replicas` for an HPA or KEDA.
    #[arg(long, env = "ALLOT_DIRECT_SCALING", value_parser = clap::builder::BoolishValueParser::new())]
    pub direct_scaling: bool,
    /// Do not discover variants from HPAs and ScaledObjects annotated `llm-d.ai/managed: "true"`
    /// (WVA v0.8+'s annotation mode; on by default).
    #[arg(long, env = "ALLOT_NO_ANNOTATED_SCALERS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_annotated_scalers: bool,
    /// Lease used for leader election.
    #[arg(long, env = "ALLOT_LEASE_NAME", default_value = DEFAULT_LEASE_NAME, value_parser = KubeName::Object)]
    pub lease_name: String,
    /// Namespace of the Lease. Default: the pod's namespace (`POD_NAMESPACE`), else the config
    /// namespace.
    #[arg(long, env = "ALLOT_LEASE_NAMESPACE", value_parser = KubeName::Namespace)]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events (at most 128 characters, Events'
    /// limit). Default: `POD_NAME`, else the hostname in a pod, else the hostname plus a random
    /// suffix.
    #[arg(long, env = "POD_NAME", value_parser = Text { max_chars: 128 })]
    pub identity: Option<String>,
}

impl Default for ControllerArgs {
    /// The flags' defaults, without reading the environment (the command line reads it; a bad
    /// value there is a clap error, not a panic here).
    fn default() -> Self {
        Self {
            watch_namespace: None,
            config_namespace: config::WVA_NAMESPACE.into(),
            accelerator_costs_configmap: config::ACCELERATOR_COSTS_CONFIG_MAP.into(),
            service_classes_configmap: config::SERVICE_CLASSES_CONFIG_MAP.into(),
            wva_configmap: config::WVA_CONTROLLER_CONFIG_MAP.into(),
            allot_configmap: config::ALLOT_CONFIG_MAP.into(),
            prometheus_url: None,
            prometheus_ca_file: None,
            prometheus_insecure: false,
            prometheus_token_file: None,
            interval: config::DEFAULT_CYCLE_INTERVAL,
            direct_scaling: false,
            no_annotated_scalers: false,
            lease_name: DEFAULT_LEASE_NAME.into(),
            lease_namespace: None,
            identity: None,
        }
    }
}

impl ControllerArgs {
    /// Settings before any ConfigMap is read.
    pub fn defaults(&self) -> AllotConfig {
        AllotConfig { cycle_interval: self.interval, direct_scaling: self.direct_scaling, ..AllotConfig::default() }
    }

    /// Where the controller looks and what it reads.
    pub fn scope(&self) -> Scope {
        Scope {
            namespace: self.watch_namespace.clone(),
            config_namespace: self.config_namespace.clone(),
            accelerator_costs: self.accelerator_costs_configmap.clone(),
            service_classes: self.service_classes_configmap.clone(),
            wva_controller: self.wva_configmap.clone(),
            allot: self.allot_configmap.clone(),
            defaults: self.defaults(),
            identity: self.identity(),
            annotated_scalers: !self.no_annotated_scalers,
        }
    }

    /// `--identity` (`POD_NAME`), else [`crate::k8s::default_identity`].
    pub fn identity(&self) -> String {
        self.identity.clone().filter(|s| !s.trim().is_empty()).unwrap_or_else(crate::k8s::default_identity)
    }

    /// The Lease this replica competes for: 15 s terms, renewed every 5 s (client-go's
    /// defaults).
    pub fn lease(&self, identity: &str) -> LeaseSettings {
        LeaseSettings {
            name: self.lease_name.clone(),
            namespace: self
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| self.config_namespace.clone()),
            identity: identity.to_string(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(5),
        }
    }

    /// Prometheus settings: the command line over the ConfigMaps' (`from_config`).
    pub fn prometheus(&self, from_config: &PrometheusConfig) -> PrometheusConfig {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let mut p = from_config.clone();
        if let Some(url) = &self.prometheus_url {
            p.url = Some(url.clone());
        }
        if let Some(ca) = path(&self.prometheus_ca_file) {
            p.ca_cert_path = Some(ca);
        }
        if self.prometheus_insecure {
            p.tls_insecure_skip_verify = true;
        }
        if let Some(token) = path(&self.prometheus_token_file) {
            p.bearer_token_path = Some(token);
            p.bearer_token = None;
        }
        p
    }

    /// The Prometheus collector for a configuration (flags over ConfigMaps): what the controller
    /// builds when the configuration appears or its Prometheus settings change.
    pub fn prometheus_loader(&self) -> LoadFactory<PrometheusCollector> {
        let args = self.clone();
        Box::new(move |config: &ClusterConfig| {
            let (settings, notes) =
                args.prometheus(&config.allot.prometheus).collector_settings(config.allot.metrics_staleness)?;
            for note in notes {
                tracing::warn!("{note}");
            }
            PrometheusCollector::new(&settings).map_err(|e| format!("Prometheus settings: {e}"))
        })
    }
}

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
    /// The simulated servers run this many times the profile's step times (1.3: the scenario's
    /// profiles are 30 % optimistic; 0.1 ≤ x ≤ 10): watch the loop calibrate against it.
    #[arg(long, default_value_t = 1.0, requires = "simulate", allow_negative_numbers = true, value_parser = TRUE_LATENCY_FACTOR)]
    pub true_latency_factor: f64,
}

/// Bounds of the `--simulate` flags (checked by clap, and by [`SimulateServeArgs::check`] for
/// settings built in code).
const RATE_SCALE: Number = Number::above(0.0, 1000.0);
const SPEED: Number = Number::above(0.0, 10_000.0);
const DURATION_S: Number = Number::above(0.0, 30.0 * 86_400.0);
const INTERVAL_S: Number = Number::within(1.0, 86_400.0);
const STARTUP_S: Number = Number::within(0.0, 86_400.0);
const TRUE_LATENCY_FACTOR: Number = Number::within(0.1, 10.0);
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
        TRUE_LATENCY_FACTOR.check("--true-latency-factor", self.true_latency_factor)?;
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
            true_latency_factor: 1.0,
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
        true_latency_factor: args.true_latency_factor,
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

/// The controller against a Kubernetes cluster, running: the loop and (optionally) the elector.
pub struct ClusterController {
    loop_task: tokio::task::JoinHandle<()>,
    elector: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl ClusterController {
    /// Wait for the loop to stop (it stops when the shutdown signal is set, after its cycle), then
    /// let the elector release the Lease. Leadership is given up only once nothing acts any more.
    pub async fn stop(self) {
        let _ = self.loop_task.await;
        if let Some((release, task)) = self.elector {
            let _ = release.send(());
            let _ = task.await;
        }
    }

    /// Whether the loop ended (with `--cycles`, or after a shutdown).
    pub fn is_finished(&self) -> bool {
        self.loop_task.is_finished()
    }
}

/// Start the controller against the cluster behind `client`: watch-backed caches, load from
/// `loader` (built when the configuration appears), leader election on `lease` (none: always
/// acts), a prompt re-plan whenever a VariantAutoscaling's spec, a configuration ConfigMap or an
/// annotated scaler changes, and the loop until `shutdown` turns true.
pub fn start_cluster_controller<L: LoadSource>(
    client: kube::Client,
    scope: Scope,
    lease: Option<LeaseSettings>,
    loader: LoadFactory<L>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> ClusterController {
    let replan = shared.clone();
    let interval = scope.defaults.cycle_interval;
    let behavior = scope.defaults.behavior.clone();
    let cluster = KubeCluster::start(client.clone(), scope, loader, Arc::new(move || replan.request_replan()));
    let (leader_tx, leader_rx) = watch::channel(lease.is_none());
    let elector = lease.map(|settings| {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let elector = LeaderElector::new(client, settings);
        let task = tokio::spawn(elector.run(leader_tx, async move {
            let _ = released.await;
        }));
        (release, task)
    });
    let cluster = cluster.with_leadership(leader_rx.clone());
    let settings = LoopSettings { interval, max_cycles: None };
    tracing::info!(interval_s = settings.interval.as_secs_f64(), "controller started against the cluster");
    let loop_task = tokio::spawn(crate::controller::run::run(
        cluster,
        shared,
        settings,
        Stabilizer::new(behavior),
        leader_rx,
        shutdown,
    ));
    ClusterController { loop_task, elector }
}

/// SIGTERM (what the kubelet sends; as PID 1 nothing else would handle it) or SIGINT. The
/// handlers are installed when this is called, not when the future is first polled, so a signal
/// that arrives while the server is still starting (reading a trace) is not lost to the default
/// action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                return futures::future::Either::Left(async move {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
                    }
                });
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server")
            }
        }
    }
    futures::future::Either::Right(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("SIGINT received; shutting down");
    })
}

/// Bind and serve until SIGTERM or SIGINT (or, with `--cycles`, until the controller ran them).
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let signalled = shutdown_signal();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    serve_until(listener, args, signalled).await
}

/// [`serve`] on a bound listener (tests bind port 0), until the process is signalled.
pub async fn serve_on(listener: tokio::net::TcpListener, args: ServeArgs) -> anyhow::Result<()> {
    let signalled = shutdown_signal();
    serve_until(listener, args, signalled).await
}

/// [`serve`] on a bound listener until `shutdown` completes.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shared = Shared::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut simulated = None;
    let mut loop_task = None;
    let mut cluster = None;
    if let Some(path) = &args.simulate {
        let live = start_simulation(path, &args.sim)?.with_history(shared.history.clone());
        simulated = Some(live.clone());
        loop_task = Some(tokio::spawn(run_controller(live, shared.clone(), args.sim.clone(), stop_rx.clone())));
    } else if args.cluster {
        let client = KubeCluster::<PrometheusCollector>::connect().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let scope = args.kube.scope();
        let lease = args.kube.lease(&scope.identity);
        tracing::info!(identity = %scope.identity, lease = %lease.name, "competing for the lease");
        cluster = Some(start_cluster_controller(
            client,
            scope,
            Some(lease),
            args.kube.prometheus_loader(),
            shared.clone(),
            stop_rx.clone(),
        ));
    }
    tracing::info!(
        address = %listener.local_addr()?,
        simulate = args.simulate.is_some(),
        cluster = args.cluster,
        "serving the Allot API"
    );
    let app = if args.simulate.is_some() || args.cluster {
        crate::api::router_with(&args.api_settings(), shared, simulated)
    } else {
        crate::api::router(&args.api_settings())
    };
    let mut server_stop = stop_rx.clone();
    // The hyper server with header and body read timeouts (`axum::serve` has none).
    let mut server = tokio::spawn(crate::api::server::serve(listener, app, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    // One signal stops everything: the server (finishing its requests), the loop (after its
    // cycle), then the elector (releasing the Lease).
    tokio::pin!(shutdown);
    let finished = async {
        match (&mut loop_task, &cluster) {
            (Some(task), _) => {
                let _ = task.await;
            }
            (None, Some(_)) | (None, None) => std::future::pending::<()>().await,
        }
    };
    let mut loop_done = false;
    let server_result = tokio::select! {
        () = &mut shutdown => None,
        () = finished => {
            loop_done = true;
            None
        }
        result = &mut server => Some(result),
    };
    let _ = stop_tx.send(true);
    if let Some(task) = loop_task.filter(|_| !loop_done) {
        let _ = task.await;
    }
    if let Some(controller) = cluster {
        controller.stop().await;
        tracing::info!("controller stopped; lease released");
    }
    let result = match server_result {
        Some(result) => result,
        None => server.await,
    };
    result.context("the HTTP server task failed")??;
    Ok(())
}

/// `allot serve` entry point.
pub fn run(args: ServeArgs) -> ExitCode {
    // RUST_LOG wins over --log-level, so it is checked like a flag.
    if let Ok(filter) = std::env::var("RUST_LOG")
        && let Err(e) = crate::telemetry::parse_log_filter(&filter)
    {
        super::say(&format!("error: invalid value {filter:?} for RUST_LOG: {e}"));
        return ExitCode::from(super::EXIT_INVALID_INPUT);
    }
    crate::telemetry::init_logging(args.log_format, &args.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            super::say(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::say(&format!("error: {e:#}"));
            ExitCode::from(super::EXIT_INVALID_INPUT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    #[test]
    fn defaults_match_wva_names_and_a_30s_cycle() {
        let cli = Cli::try_parse_from(["allot"]).expect("no argument is required");
        let a = cli.args;
        assert_eq!(a.interval, Duration::from_secs(30));
        assert!(!a.direct_scaling);
        let scope = a.scope();
        assert_eq!(
            (scope.config_namespace.as_str(), scope.accelerator_costs.as_str(), scope.allot.as_str()),
            ("workload-variant-autoscaler-system", "accelerator-unit-costs", "allot-config")
        );
        assert_eq!(scope.namespace, None);
        assert!(scope.annotated_scalers, "annotation discovery is on by default, as in WVA v0.8+");
        assert_eq!(a.lease("x").name, "allot-leader");
        assert_eq!(a, ControllerArgs::default(), "Default and the flags' defaults agree");
    }

    #[test]
    fn flags_set_scope_lease_and_override_prometheus() {
        let cli = Cli::try_parse_from([
            "allot",
            "--watch-namespace",
            "llm",
            "--interval",
            "1m",
            "--direct-scaling",
            "--lease-namespace",
            "allot-system",
            "--identity",
            "allot-0",
            "--prometheus-url",
            "https://thanos:9091",
            "--prometheus-token-file",
            "/var/run/secrets/token",
            "--no-annotated-scalers",
        ])
        .expect("valid flags");
        let a = cli.args;
        let d = a.defaults();
        assert_eq!((d.cycle_interval, d.direct_scaling), (Duration::from_secs(60), true));
        let scope = a.scope();
        assert_eq!(scope.namespace.as_deref(), Some("llm"));
        assert!(!scope.annotated_scalers);
        let lease = a.lease(&scope.identity);
        assert_eq!((lease.namespace.as_str(), lease.identity.as_str()), ("allot-system", "allot-0"));
        let from_config = PrometheusConfig {
            url: Some("https://prometheus:9090".into()),
            bearer_token: Some("inline".into()),
            ..PrometheusConfig::default()
        };
        let p = a.prometheus(&from_config);
        assert_eq!(p.url.as_deref(), Some("https://thanos:9091"));
        assert_eq!((p.bearer_token_path.as_deref(), p.bearer_token), (Some("/var/run/secrets/token"), None));
        assert!(Cli::try_parse_from(["allot", "--interval", "soon"]).is_err());
    }
}
