//! The console (`allot serve --simulate`, `GET /`) and the `allot simulate` report in a real
//! browser: Debian's headless Chromium loads them, the test reads the rendered DOM and checks it
//! against the JSON the server answers, and screenshots must show a page (not a blank one).
//! Screenshots are kept under `target/tmp/browser/` for a person to look at.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::browser::{Chromium, attribute, element, elements, field, pixels};

fn screens() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

/// The screenshot shows a rendered page: many colors, real contrast, and ink beyond the background.
fn assert_not_blank(path: &Path) {
    let p = pixels(path);
    assert!(p.luminance_sd > 8.0 && p.colors > 20 && p.ink > 0.01, "{} looks blank: {p:?}", path.display());
}

/// `allot serve --simulate` on a free loopback port; killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port()
}

fn get(url: &str) -> Option<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let r = reqwest::get(url).await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    })
}

fn get_json(url: &str) -> Value {
    let (status, body) = get(url).unwrap_or_else(|| panic!("{url} unreachable"));
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

fn post_json(url: &str, body: &Value) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let r = reqwest::Client::new().post(url).json(body).send().await.expect("reachable");
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.expect("JSON")
    })
}

/// A simulated fleet whose synthetic traffic ends after 900 simulated seconds (9 s of wall time
/// at 100×): from then on the controller holds its last plan, so the page and the JSON the test
/// compares it with are of the same cycle.
fn start_server() -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--simulate"])
        .args(["--speed", "100", "--duration-s", "900", "--interval-s", "30", "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let server = Server { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let ended = |metrics: &str| {
            metrics.lines().any(|l| {
                l.strip_prefix("allot_cycles_total{outcome=\"observe_error\"} ")
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .is_some_and(|n| n >= 1.0)
            })
        };
        if let Some((200, metrics)) = get(&format!("{}/metrics", server.url))
            && ended(&metrics)
        {
            // The trace has ended and the last plan is held.
            return server;
        }
        assert!(Instant::now() < deadline, "the simulated trace did not end within 240 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Equal as numbers: the page prints JavaScript's shortest round-trip form, which serde_json (without
/// its `float_roundtrip` feature) may read back one unit in the last place away.
fn assert_same(shown: f64, json: f64, what: &str) {
    assert!((shown - json).abs() <= 1e-12 * json.abs().max(1.0), "{what}: page {shown} vs JSON {json}");
}

fn data_value(html: &str, name: &str) -> f64 {
    let (_, value) = field(html, name).unwrap_or_else(|| panic!("no data-field={name} in {html}"));
    value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric data-value for {name}"))
}

/// Milliseconds as the page prints them.
fn ms(x: f64) -> String {
    if x.abs() < 10.0 { format!("{x:.1}") } else { format!("{x:.0}") }
}

fn text(html: &str, name: &str) -> String {
    field(html, name).unwrap_or_else(|| panic!("no data-field={name} in {html}")).0
}

#[test]
fn the_console_shows_the_plan_the_api_serves_and_charts_the_recent_cycles() {
    let chromium = Chromium::find();
    let server = start_server();
    let decision = get_json(&format!("{}/v1/plan", server.url));
    let history = get_json(&format!("{}/v1/history", server.url));
    let records = history["records"].as_array().expect("records");
    assert!(records.len() >= 3, "{} cycles recorded", records.len());

    let dom = chromium.dump_dom(&format!("{}/", server.url), 10_000);
    let body =
        element(&dom, "body", "data-state", "ready").unwrap_or_else(|| panic!("the page never got data:\n{dom}"));
    assert_eq!(attribute(body, "data-cycle"), Some(decision["cycle"].to_string()));

    // The summary: this cycle's costs, exactly.
    let summary = element(&dom, "div", "id", "summary").expect("summary");
    let plan = &decision["plan"];
    assert_same(data_value(summary, "cost_usd_per_hour"), num(&plan["cost_usd_per_hour"]), "cost_usd_per_hour");
    assert_eq!(text(summary, "cost_usd_per_hour"), format!("${:.2}/h", num(&plan["cost_usd_per_hour"])));
    assert_eq!(text(summary, "snapshot_id"), decision["snapshot_id"].as_str().expect("id"));

    // One fleet row per variant, with the decision's replicas and pods and the plan's numbers.
    let variants = decision["variants"].as_array().expect("variants");
    let mut rows = 0;
    for v in variants {
        let name = v["name"].as_str().expect("name");
        let row = element(&dom, "tr", "data-variant", name).unwrap_or_else(|| panic!("no row for {name}"));
        rows += 1;
        for (f, j) in [("current", &v["current"]), ("desired", &v["desired"]), ("planned", &v["planned"])] {
            assert_eq!(text(row, f), j.to_string(), "{name} {f}");
        }
        assert_eq!(text(row, "ready"), v["pods"]["ready"].to_string(), "{name}");
        assert_eq!(text(row, "booting"), v["pods"]["booting"].to_string(), "{name}");
        let p = plan["variants"]
            .as_array()
            .expect("plan variants")
            .iter()
            .find(|p| p["name"] == v["name"])
            .expect("planned");
        assert_same(data_value(row, "cost_usd_per_hour"), num(&p["cost_usd_per_hour"]), "cost_usd_per_hour");
        assert_same(data_value(row, "load_rps"), num(&p["load_rps"]), "load_rps");
        if let Some(prediction) = p.get("predicted") {
            // Each class's predicted statistic against its target, as the plan says.
            for check in prediction["slo"].as_array().expect("slo") {
                for metric in ["ttft", "itl"] {
                    let Some(t) = check.get(metric) else { continue };
                    let shown = format!(
                        "{}: {} {} / {}",
                        check["class"].as_str().unwrap_or(""),
                        t["statistic"].as_str().unwrap_or(""),
                        ms(num(&t["predicted_ms"])),
                        ms(num(&t["target_ms"]))
                    );
                    assert!(row.contains(&shown), "{name}: {shown} not in {row}");
                }
            }
        }
    }
    assert_eq!(rows, variants.len());
    assert_eq!(dom.matches("<tr data-variant=").count(), variants.len(), "one row per variant, no what-if yet");

    // Demand per (model, class) and GPUs per type.
    for m in plan["models"].as_array().expect("models") {
        let rows = elements(&dom, "tr", "data-model", m["name"].as_str().expect("model"));
        let row =
            rows.iter().find(|r| attribute(r, "data-class").as_deref() == m["class"].as_str()).expect("model row");
        assert_same(data_value(row, "demand_rps"), num(&m["demand_rps"]), "demand_rps");
        assert_same(data_value(row, "served_fraction"), num(&m["served_fraction"]), "served_fraction");
    }
    for a in plan["accelerators"].as_array().expect("accelerators") {
        let row = element(&dom, "tr", "data-accelerator", a["name"].as_str().expect("name")).expect("gpu row");
        for f in ["available_gpus", "used_gpus", "free_gpus"] {
            assert_eq!(text(row, f), a[f].to_string(), "{f}");
        }
    }
    // What binds, one item per binding constraint.
    assert_eq!(dom.matches("<li data-kind=").count(), plan["binding"].as_array().expect("binding").len());

    // Charts over the recorded cycles: each drawn, with a line per series.
    for chart in ["replicas", "replica-states", "gpus", "cost"] {
        let figure = element(&dom, "figure", "data-chart", chart).unwrap_or_else(|| panic!("no {chart} chart"));
        assert!(figure.contains("<svg") && figure.matches("<path").count() >= 2, "{chart}: {figure}");
    }
    let last = records.last().expect("a record");
    let slo_charts = elements(&dom, "figure", "data-chart", "slo");
    assert_eq!(slo_charts.len(), last["slo"].as_array().expect("slo").len());
    assert!(
        slo_charts.iter().any(|f| f.contains("data-name=\"observed\"")),
        "observed attainment is drawn where the simulator saw requests finish"
    );
    assert!(slo_charts.iter().all(|f| f.contains("data-name=\"predicted\"") && f.contains("data-name=\"objective\"")));
    assert_eq!(
        elements(&dom, "figure", "data-chart", "demand").len(),
        last["models"].as_array().expect("models").len()
    );
    // The loop forecasts each model's load at ready time: the demand charts draw it, or, while
    // no record carries one, the page says so.
    let forecasting = records.iter().any(|r| {
        r["models"]
            .as_array()
            .is_some_and(|models| models.iter().any(|m| m.get("forecast").is_some_and(|f| !f.is_null())))
    });
    let demand = elements(&dom, "figure", "data-chart", "demand");
    if forecasting {
        assert!(demand.iter().any(|f| f.contains("data-name=\"forecast\"")), "the forecast is drawn");
        assert!(!dom.contains("id=\"no-forecast\""));
    } else {
        assert!(dom.contains("id=\"no-forecast\""), "no forecast yet, and the page says so");
    }

    // What a person sees first, then each section wherever it is on the page.
    let png = screens().join("console.png");
    chromium.screenshot(&format!("{}/", server.url), &png, 1400, 1000, 10_000);
    assert_not_blank(&png);
    let mut browser = chromium.session(1400, 1000);
    browser.navigate(&format!("{}/", server.url));
    browser.wait_for("document.body.dataset.state === 'ready'", Duration::from_secs(60));
    for section in ["fleet", "why", "demand", "charts", "models-state"] {
        let png = screens().join(format!("console-{section}.png"));
        browser.screenshot(&format!("#{section}"), &png);
        assert_not_blank(&png);
    }
}

#[test]
fn the_what_if_form_fills_from_the_url_and_shows_the_plan_diff() {
    let chromium = Chromium::find();
    let server = start_server();
    let overrides = json!({ "load_multiplier": { "*": 2.0 }, "inventory_change": { "H100-80GB": -8 } });
    let expected = post_json(&format!("{}/v1/plans", server.url), &json!({ "overrides": overrides }));
    let query: String = url_encode(&overrides.to_string());
    let url = format!("{}/?whatif={query}", server.url);
    let dom = chromium.dump_dom(&url, 20_000);
    let result = element(&dom, "div", "id", "whatif-result").expect("result");
    assert_eq!(attribute(result, "data-state").as_deref(), Some("done"), "{result}");
    // The form holds what the URL said.
    assert!(dom.contains("name=\"load:*\"") && dom.contains("value=\"2\""), "the form is filled");
    assert_same(data_value(result, "cost_change"), num(&expected["cost_change_usd_per_hour"]), "cost_change");
    let diff = expected["diff"].as_array().expect("diff");
    assert!(!diff.is_empty(), "doubling the load changes the plan: {expected:#}");
    for d in diff {
        let row = element(result, "tr", "data-variant", d["variant"].as_str().expect("variant")).expect("diff row");
        assert_eq!(text(row, "current_desired"), d["current_desired"].to_string());
        assert_eq!(text(row, "what_if"), d["what_if"].to_string());
    }
    assert_eq!(result.matches("<tr data-variant=").count(), diff.len());

    // The same what-if typed into the form and submitted with its button, as a person would.
    let mut browser = chromium.session(1400, 1000);
    browser.navigate(&format!("{}/", server.url));
    browser.wait_for("document.querySelector('#whatif-submit') !== null", Duration::from_secs(60));
    browser.eval(
        "(() => { const f = document.getElementById('whatif-form'); \
         f.elements.namedItem('load:*').value = '2'; f.elements.namedItem('gpus:H100-80GB').value = '-8'; \
         document.getElementById('whatif-submit').click(); return true; })()",
    );
    browser.wait_for("document.getElementById('whatif-result').dataset.state === 'done'", Duration::from_secs(60));
    assert_eq!(
        browser.eval("location.search.startsWith('?whatif=')"),
        Value::Bool(true),
        "the URL carries the what-if"
    );
    let typed = browser.dom();
    let result = element(&typed, "div", "id", "whatif-result").expect("result");
    assert_same(data_value(result, "cost_change"), num(&expected["cost_change_usd_per_hour"]), "cost_change");
    assert_eq!(result.matches("<tr data-variant=").count(), diff.len());
    let png = screens().join("console-whatif.png");
    browser.screenshot("#whatif", &png);
    assert_not_blank(&png);

    // A bad override comes back as the server's problem document, path and all.
    let bad = url_encode(&json!({ "inventory_change": { "TPU-v9": 4 } }).to_string());
    let dom = chromium.dump_dom(&format!("{}/?whatif={bad}", server.url), 10_000);
    let result = element(&dom, "div", "id", "whatif-result").expect("result");
    assert_eq!(attribute(result, "data-state").as_deref(), Some("error"), "{result}");
    assert!(result.contains("overrides.inventory_change.TPU-v9"), "{result}");
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sim-chat.yaml");
const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/conv_first_300s.csv");

#[test]
fn the_simulate_report_compares_first_and_draws_every_policy_on_one_time_axis() {
    let chromium = Chromium::find();
    let report = screens().join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["simulate", "-q", "-f", SCENARIO, "--trace", TRACE, "--duration-s", "300", "--rate-scale", "2"])
        .args(["--startup-s", "20", "--control-period-s", "10", "--metric-lag-s", "5", "--window-s", "30"])
        .args(["--policy", "allot,hpa,static", "--report"])
        .arg(&report)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let url = format!("file://{}", report.display());
    let dom = chromium.dump_dom(&url, 1000);

    // Comparison first, then the load, then one section per policy.
    let order: Vec<usize> =
        ["id=\"comparison\"", "id=\"load\"", "id=\"policy-allot\"", "id=\"policy-hpa\"", "id=\"policy-static\""]
            .iter()
            .map(|s| dom.find(s).unwrap_or_else(|| panic!("no {s}")))
            .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    let comparison = element(&dom, "section", "id", "comparison").expect("comparison");
    assert!(comparison.contains("id=\"tradeoff\""), "one chart compares the policies");
    // The table's attainment equals what the command printed.
    for line in stdout.lines().skip_while(|l| !l.starts_with("POLICY")).skip(1).filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let row = element(comparison, "tr", "data-policy", cells[0]).unwrap_or_else(|| panic!("no row {}", cells[0]));
        let shown = format!("{} %", cells[1].trim_end_matches('%'));
        assert!(row.contains(&shown), "{}: {shown} not in {row}", cells[0]);
        let windows = format!("{} %", cells.last().expect("windows").trim_end_matches('%'));
        assert!(row.contains(&windows), "{}: {windows} not in {row}", cells[0]);
    }
    // Every time chart of the page shares one axis: the same tick labels everywhere.
    let sections = ["policy-allot", "policy-hpa", "policy-static"];
    let ticks = |s: &str| {
        let section = element(&dom, "section", "id", s).expect("section");
        let first = element(section, "figure", "class", "chart").expect("a chart");
        first.matches("text-anchor=\"middle\" fill=\"#444\">").count()
    };
    assert!(sections.iter().all(|s| ticks(s) == ticks("policy-allot")));
    for s in sections {
        let section = element(&dom, "section", "id", s).expect("section");
        assert_eq!(section.matches("<figure class=\"chart\"").count(), 5, "{s}");
        assert!(
            section.contains("Replicas by state")
                && section.contains("booting")
                && section.contains("pending (no GPU)")
        );
        assert!(
            section.contains("Requests by outcome") && section.contains("dropped") && section.contains("unfinished")
        );
    }
    // The static fleet is far too small for twice the rate: its TTFT runs off the top, marked.
    let stat = element(&dom, "section", "id", "policy-static").expect("static");
    assert!(stat.contains("class=\"clipped\"") && stat.contains("data-true-value="), "clipped values are labelled");

    let mut browser = chromium.session(1400, 1000);
    browser.navigate(&url);
    for section in ["comparison", "load", "policy-allot", "policy-hpa", "policy-static"] {
        let png = screens().join(format!("report-{section}.png"));
        browser.screenshot(&format!("#{section}"), &png);
        assert_not_blank(&png);
    }
    // Full width: the comparison section spans the window (less the page margins).
    let width = browser.eval("document.getElementById('comparison').getBoundingClientRect().width");
    assert!(width.as_f64().is_some_and(|w| w > 1300.0), "{width}");
}
