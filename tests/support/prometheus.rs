//! A real Prometheus for tests: `/usr/bin/prometheus` (Debian's package; `PROMETHEUS` overrides the
//! binary) on a free loopback port, scraping the given targets every second and evaluating the
//! given rule files every second, with its storage in a temporary folder. Dropping the handle kills
//! the process and removes the folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A running Prometheus; killed, and its folder removed, on drop.
pub struct PrometheusProcess {
    child: Child,
    dir: PathBuf,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    http: reqwest::Client,
}

impl PrometheusProcess {
    /// Starts Prometheus scraping `targets` — `(job, "127.0.0.1:port", metrics_path)` — and loading
    /// `rule_files`, and waits until it answers `/-/ready`.
    pub async fn start(targets: &[(&str, &str, &str)], rule_files: &[&Path]) -> Result<Self> {
        let mut last_error = None;
        // A free port can be taken between our probe and Prometheus's bind; try a few.
        for _ in 0..3 {
            match Self::start_once(targets, rule_files).await {
                Ok(process) => return Ok(process),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.expect("three attempts were made"))
    }

    async fn start_once(targets: &[(&str, &str, &str)], rule_files: &[&Path]) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "allot-prometheus-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).with_context(|| format!("creating {}", dir.display()))?;
        let rule_files = rule_files
            .iter()
            .map(|p| std::path::absolute(p).map(|p| p.display().to_string()))
            .collect::<std::io::Result<Vec<_>>>()?;
        let scrape_configs: Vec<Value> = targets
            .iter()
            .map(|(job, address, path)| {
                json!({"job_name": job, "metrics_path": path, "static_configs": [{"targets": [address]}]})
            })
            .collect();
        // JSON is YAML, and serde_json does the quoting.
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": scrape_configs,
        });
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let binary = std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".to_string());
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {binary} (install Debian's prometheus package: .ci/setup)"))?;
        let mut process = Self { child, dir, url: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        process.wait_ready(Duration::from_secs(30)).await?;
        Ok(process)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("prometheus exited with {status} before it was ready:\n{}", self.log_tail());
            }
            let ready = self.http.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after {timeout:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of Prometheus's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Evaluates `promql` now and returns `data.result` (a list for vectors, `[time, "value"]`
    /// for scalars). A Prometheus error (bad expression, …) is an `Err` naming the query.
    pub async fn query(&self, promql: &str) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}/api/v1/query", self.url))
            .form(&[("query", promql)])
            .send()
            .await
            .with_context(|| format!("querying {promql}"))?;
        let body: Value = response.json().await.with_context(|| format!("decoding the answer to {promql}"))?;
        if body["status"] != "success" {
            bail!("query {promql} failed: {} {}", body["errorType"], body["error"]);
        }
        Ok(body["data"]["result"].clone())
    }

    /// Polls `promql` every 200 ms until it returns at least one series, and returns them.
    pub async fn wait_for_series(&self, promql: &str, timeout: Duration) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Value::Array(series) = self.query(promql).await?
                && !series.is_empty()
            {
                return Ok(series);
            }
            if Instant::now() > deadline {
                bail!("no series for {promql} after {timeout:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of a vector element (`{"metric": …, "value": [t, "v"]}`) as a number.
pub fn sample_value(element: &Value) -> Option<f64> {
    element["value"][1].as_str()?.parse().ok()
}
