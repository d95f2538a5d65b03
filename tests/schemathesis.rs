//! Schemathesis (property-based API testing from the OpenAPI document) against the real
//! `allot serve` and `allot serve --simulate` binaries on loopback, with every check and a fixed
//! seed: any finding fails the test. `.ci/setup` installs schemathesis into
//! `~/.cache/allot/schemathesis`; `ALLOT_SCHEMATHESIS` names another `st`. Without it the test
//! fails, saying how to install it: a test that cannot run must not pass.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Test cases schemathesis draws per operation and phase (`ALLOT_SCHEMATHESIS_EXAMPLES` overrides).
const MAX_EXAMPLES: u32 = 100;
const SEED: u32 = 1;

/// Schemathesis's `positive_data_acceptance` counts 422 as a schema-valid body refused. A
/// scenario's names must refer to each other (a variant's accelerator to an accelerator, a load
/// to a class with a target for its model), which JSON Schema cannot say, so a schema-valid
/// body may still be invalid: 422, naming the reference. Every *value* bound is in the schema,
/// and a schema-valid body must never be malformed (400). 404 is a GET of the current plan on a
/// server that runs no controller.
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "409", "422"]
"#;

fn schemathesis() -> PathBuf {
    let candidates = std::env::var_os("ALLOT_SCHEMATHESIS")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/allot/schemathesis/bin/st")))
        .chain(std::iter::once(PathBuf::from("st")));
    for st in candidates {
        if Command::new(&st).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return st;
        }
    }
    panic!(
        "schemathesis is not installed: run .ci/setup (it installs it into ~/.cache/allot/schemathesis), \
         or set ALLOT_SCHEMATHESIS to an `st` binary"
    );
}

/// `allot serve` with these flags on a free loopback port; killed on drop.
struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("allot starts");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    let address = loop {
        let line = lines.next().expect("allot logs where it listens before exiting").expect("log line");
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if let Some(address) = entry["address"].as_str() {
            break format!("http://{address}");
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, address }
}

fn run_schemathesis(server: &Server) {
    let st = schemathesis();
    let dir = std::env::temp_dir().join(format!("allot-schemathesis-{}-{}", std::process::id(), server.address.len()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let examples = std::env::var("ALLOT_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.to_string());
    let output = Command::new(&st)
        .current_dir(&dir)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", server.address)])
        .args(["--checks", "all", "--max-examples", &examples, "--seed", &SEED.to_string()])
        .args(["--workers", "1", "--no-color", "--generation-database", "none", "--request-timeout", "60"])
        .output()
        .expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{text}");
    assert!(
        output.status.success(),
        "schemathesis found problems (exit {:?}); its report is above",
        output.status.code()
    );
    // It really ran: every operation of the OpenAPI document, and test cases that all passed.
    let operations: usize = <allot::api::ApiDoc as utoipa::OpenApi>::openapi()
        .paths
        .paths
        .values()
        .map(|item| {
            [&item.get, &item.put, &item.post, &item.delete, &item.options, &item.head, &item.patch, &item.trace]
                .iter()
                .filter(|o| o.is_some())
                .count()
        })
        .sum();
    assert!(text.contains(&format!("Tested: {operations}")), "{operations} operations expected:\n{text}");
    let generated = text
        .lines()
        .find_map(|l| l.trim().split_once(" generated, ").and_then(|(n, _)| n.parse::<u32>().ok()))
        .unwrap_or(0);
    assert!(generated >= 100, "only {generated} test cases ran:\n{text}");
    assert!(text.contains(&format!("{generated} generated, {generated} passed")), "{text}");
}

/// The status of a GET, on a fresh connection.
fn status(server: &Server, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let host = server.address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn the_dry_run_api_passes_every_schemathesis_check() {
    let server = serve(&[]);
    run_schemathesis(&server);
}

#[test]
fn the_controller_api_passes_every_schemathesis_check() {
    let server = serve(&["--simulate", "--speed", "100"]);
    // Against a controller with a plan: GET /v1/plan and /v1/snapshot answer 200 and what-ifs plan.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(&server, "/v1/plan") != Some(200) {
        assert!(Instant::now() < deadline, "no controller cycle within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    run_schemathesis(&server);
}
