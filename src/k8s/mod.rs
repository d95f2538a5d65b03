//! Kubernetes adapter of the controller (DESIGN §5–6), documented for users in
//! `docs/kubernetes.md`:
//!
//! - [`crd`]: the `VariantAutoscaling` custom resource (`llmd.ai/v1alpha1`, WVA-compatible);
//! - [`config`]: WVA's ConfigMaps and Allot's `allot-config`;
//! - [`cluster`]: [`KubeCluster`], the controller's [`crate::controller::Cluster`] on a real API
//!   server (observe: list and assemble; act: status, events, optional scaling);
//! - [`status`]: what a VariantAutoscaling's status says after a cycle (pure);
//! - [`lease`]: leader election on a Lease;
//! - [`selector`]: label selectors as the `scale` subresource reports them.
//!
//! From cluster objects to a scenario is [`crate::observe`] (pure).
//!
//! Wiring (what `allot serve` does in a cluster):
//!
//! ```ignore
//! let scope = args.scope();
//! let client = kube::Client::try_default().await?;
//! // Prometheus settings come from the ConfigMaps (and flags), so read them before the collector.
//! let config = k8s::read_config(&client, &scope).await?.map_err(anyhow::Error::msg)?;
//! let (settings, notes) = args.prometheus(&config.allot.prometheus).collector_settings(config.allot.metrics_staleness)?;
//! let load = PrometheusCollector::new(&settings)?;
//! let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
//! tokio::spawn(LeaderElector::new(client.clone(), args.lease()).run(leader_tx, shutdown));
//! let cluster = KubeCluster::new(client, load, scope).with_leadership(leader_rx.clone());
//! // controller::run(cluster, …, leader_rx, …), with the interval and behavior of `config.allot`.
//! ```

pub mod cluster;
pub mod config;
pub mod crd;
pub mod lease;
pub mod selector;
pub mod status;

use std::path::PathBuf;
use std::time::Duration;

pub use cluster::{KubeCluster, Scope, read_config};
pub use lease::{LeaderElector, LeaseSettings};

use config::{AllotConfig, PrometheusConfig, parse_duration};

/// Command-line and environment settings of the controller in a cluster. Settings in
/// `allot-config` (interval, direct scaling) override these defaults at run time; Prometheus
/// settings given here override the ConfigMaps.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct ControllerArgs {
    /// Only VariantAutoscalings of this namespace. Default: all namespaces.
    #[arg(long, env = "ALLOT_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the ConfigMaps (WVA's, so an existing installation keeps its configuration).
    #[arg(long, env = "ALLOT_CONFIG_NAMESPACE", default_value = config::WVA_NAMESPACE)]
    pub config_namespace: String,
    /// Name of WVA's accelerator price list.
    #[arg(long, env = "ALLOT_ACCELERATOR_COSTS_CONFIGMAP", default_value = config::ACCELERATOR_COSTS_CONFIG_MAP)]
    pub accelerator_costs_configmap: String,
    /// Name of WVA's service classes.
    #[arg(long, env = "ALLOT_SERVICE_CLASSES_CONFIGMAP", default_value = config::SERVICE_CLASSES_CONFIG_MAP)]
    pub service_classes_configmap: String,
    /// Name of WVA's controller settings (optional ConfigMap).
    #[arg(long, env = "ALLOT_WVA_CONFIGMAP", default_value = config::WVA_CONTROLLER_CONFIG_MAP)]
    pub wva_configmap: String,
    /// Name of Allot's own settings (optional ConfigMap, key `config.yaml`).
    #[arg(long, env = "ALLOT_CONFIGMAP", default_value = config::ALLOT_CONFIG_MAP)]
    pub allot_configmap: String,
    /// Prometheus base URL (overrides the ConfigMaps).
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// CA bundle to verify Prometheus's certificate.
    #[arg(long, env = "PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Do not verify Prometheus's certificate (testing only).
    #[arg(long, env = "PROMETHEUS_INSECURE_SKIP_VERIFY")]
    pub prometheus_insecure: bool,
    /// File holding a bearer token for Prometheus (a mounted Secret or projected token).
    #[arg(long, env = "PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// Planning cycle (`30s`, `1m`).
    #[arg(long, env = "ALLOT_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Patch each target's `scale` subresource directly, not only publish
    /// `allot_desired_replicas` for an HPA or KEDA.
    #[arg(long, env = "ALLOT_DIRECT_SCALING")]
    pub direct_scaling: bool,
    /// Lease used for leader election.
    #[arg(long, env = "ALLOT_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// Namespace of the Lease. Default: the pod's namespace (`POD_NAMESPACE`), else the config
    /// namespace.
    #[arg(long, env = "ALLOT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events. Default: `POD_NAME`, else `HOSTNAME`.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// The Lease the replicas of one installation compete for.
pub const DEFAULT_LEASE_NAME: &str = "allot-leader";

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
        }
    }

    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "allot".into())
    }

    /// The Lease this replica competes for: 15 s terms, renewed every 5 s (client-go's
    /// defaults).
    pub fn lease(&self) -> LeaseSettings {
        LeaseSettings {
            name: self.lease_name.clone(),
            namespace: self
                .lease_namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| self.config_namespace.clone()),
            identity: self.identity(),
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
        assert_eq!(a.lease().name, "allot-leader");
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
        ])
        .expect("valid flags");
        let a = cli.args;
        let d = a.defaults();
        assert_eq!((d.cycle_interval, d.direct_scaling), (Duration::from_secs(60), true));
        assert_eq!(a.scope().namespace.as_deref(), Some("llm"));
        let lease = a.lease();
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
