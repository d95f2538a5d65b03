//! `allot serve --simulate`: the controller loop against a simulated cluster. This adapter reads
//! the scenario and trace files and starts the engine thread and the loop; the REST API and the
//! metrics are the same as in a cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

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
    /// Replay this trace (Azure CSV or JSONL) instead of synthetic traffic at the scenario's load.
    #[arg(long, requires = "simulate")]
    pub trace: Option<PathBuf>,
    /// Multiply the trace's request rate.
    #[arg(long, default_value_t = 1.0, requires = "simulate")]
    pub rate_scale: f64,
    /// Simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 10.0, requires = "simulate")]
    pub speed: f64,
    /// Length of synthetic traffic, simulated seconds.
    #[arg(long, default_value_t = 6.0 * 3600.0, requires = "simulate")]
    pub duration_s: f64,
    /// Controller interval, simulated seconds.
    #[arg(long, default_value_t = 30.0, requires = "simulate")]
    pub interval_s: f64,
    /// Replica start-up time, simulated seconds.
    #[arg(long, default_value_t = 120.0, requires = "simulate")]
    pub startup_s: f64,
    /// Stop after this many controller cycles (default: run until interrupted).
    #[arg(long, requires = "simulate")]
    pub cycles: Option<u64>,
}

impl Default for SimulateServeArgs {
    fn default() -> Self {
        Self {
            trace: None,
            rate_scale: 1.0,
            speed: 10.0,
            duration_s: 6.0 * 3600.0,
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
    if !(args.speed.is_finite() && args.speed > 0.0) {
        anyhow::bail!("--speed must be a positive number, got {}", args.speed);
    }
    if !(args.interval_s.is_finite() && args.interval_s > 0.0) {
        anyhow::bail!("--interval-s must be a positive number, got {}", args.interval_s);
    }
    let requests = match &args.trace {
        None => synthetic_requests(&snapshot, args.duration_s.max(0.0), 3600.0, 0.5, 1),
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            let rows = if file.extension().is_some_and(|e| e == "jsonl") {
                trace::parse_jsonl(&text)
            } else {
                trace::parse_azure_csv(&text)
            }
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let window = trace::Window { start_s: 0.0, duration_s: None, rate_scale: args.rate_scale };
            trace::assign(&trace::select(&rows, &window), &snapshot, &[], 1)
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
