//! A real browser for tests: Debian's headless Chromium (`.ci/setup` installs the `chromium`
//! package; `CHROMIUM` names another binary). Each call runs one browser process with its own
//! profile folder, loads one URL, lets scripts run for a virtual-time budget (Chromium pauses
//! virtual time while requests are in flight, so fetches complete), and returns the serialized
//! DOM or writes a screenshot. A missing browser fails the test: it cannot pass without one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT_PROFILE: AtomicUsize = AtomicUsize::new(0);

pub struct Chromium {
    binary: PathBuf,
}

impl Chromium {
    /// The browser, or a panic that says how to get one.
    pub fn find() -> Self {
        let candidates: Vec<PathBuf> = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .into_iter()
            .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].map(PathBuf::from))
            .collect();
        match candidates.iter().find(|p| p.is_file()) {
            Some(binary) => Self { binary: binary.clone() },
            None => panic!(
                "no headless Chromium found (looked at {candidates:?}): run .ci/setup, which installs Debian's \
                 `chromium` package, or set CHROMIUM to a Chromium binary. The browser tests cannot pass without it."
            ),
        }
    }

    fn run(&self, extra: &[String], url: &str) -> std::process::Output {
        let profile = std::env::temp_dir().join(format!(
            "allot-chromium-{}-{}",
            std::process::id(),
            NEXT_PROFILE.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = Command::new(&self.binary)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .args(["--disable-extensions", "--disable-background-networking", "--hide-scrollbars", "--mute-audio"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        // Read both pipes on threads so a chatty browser never blocks on a full pipe.
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut b);
            b
        });
        let err = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut b);
            b
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the browser") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&profile);
                panic!("chromium did not finish {url} within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = std::fs::remove_dir_all(&profile);
        std::process::Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
    }

    /// The DOM after scripts ran for `budget_ms` of virtual time.
    pub fn dump_dom(&self, url: &str, budget_ms: u32) -> String {
        let out = self.run(&["--dump-dom".into(), format!("--virtual-time-budget={budget_ms}")], url);
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && dom.contains("<html"),
            "chromium --dump-dom {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        dom
    }

    /// A PNG of the first `width`×`height` pixels of the page (scrolled to its `#fragment`).
    pub fn screenshot(&self, url: &str, path: &Path, width: u32, height: u32, budget_ms: u32) {
        let _ = std::fs::remove_file(path);
        let out = self.run(
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size={width},{height}"),
                format!("--virtual-time-budget={budget_ms}"),
            ],
            url,
        );
        assert!(
            out.status.success() && path.is_file(),
            "chromium --screenshot {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What a screenshot shows, in numbers: size, luminance spread and how much is not background.
#[derive(Debug)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    /// Standard deviation of luminance (0–255).
    pub luminance_sd: f64,
    /// Distinct colors (quantized to 4 bits per channel).
    pub colors: usize,
    /// Share of pixels that differ from the most common color.
    pub ink: f64,
}

/// Decode a PNG and measure it.
pub fn pixels(path: &Path) -> Pixels {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap_or_else(|e| panic!("{}: not a PNG: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size().expect("the image fits in memory")];
    let info = reader.next_frame(&mut buf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let channels = info.color_type.samples();
    let data = &buf[..info.buffer_size()];
    let mut counts = std::collections::BTreeMap::new();
    let (mut sum, mut sum2, mut n) = (0.0, 0.0, 0.0);
    for px in data.chunks_exact(channels) {
        let (r, g, b) = if channels >= 3 { (px[0], px[1], px[2]) } else { (px[0], px[0], px[0]) };
        let y = 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
        sum += y;
        sum2 += y * y;
        n += 1.0;
        *counts.entry((r >> 4, g >> 4, b >> 4)).or_insert(0usize) += 1;
    }
    let mean = sum / n;
    let background = counts.values().copied().max().unwrap_or(0) as f64;
    Pixels {
        width: info.width,
        height: info.height,
        luminance_sd: (sum2 / n - mean * mean).max(0.0).sqrt(),
        colors: counts.len(),
        ink: 1.0 - background / n,
    }
}

/// The first `<tag … attr="value"` element of `html` through its closing tag (`tag` elements do
/// not nest in what the tests read: table rows, list items, figures).
pub fn element<'a>(html: &'a str, tag: &str, attr: &str, value: &str) -> Option<&'a str> {
    let needle = format!("{attr}=\"{value}\"");
    let mut from = 0;
    while let Some(i) = html[from..].find(&format!("<{tag}")) {
        let start = from + i;
        let open_end = start + html[start..].find('>')?;
        if html[start..open_end].contains(&needle) {
            let close = format!("</{tag}>");
            let end = open_end + html[open_end..].find(&close)? + close.len();
            return Some(&html[start..end]);
        }
        from = open_end;
    }
    None
}

/// Every `<tag … attr="value"` element of `html`.
pub fn elements<'a>(html: &'a str, tag: &str, attr: &str, value: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(e) = element(rest, tag, attr, value) {
        let at = (e.as_ptr() as usize - rest.as_ptr() as usize) + e.len();
        out.push(e);
        rest = &rest[at..];
    }
    out
}

/// The text and `data-value` of the first element with `data-field="field"`.
pub fn field(html: &str, field: &str) -> Option<(String, Option<String>)> {
    let needle = format!("data-field=\"{field}\"");
    let at = html.find(&needle)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let value = tag.find("data-value=\"").map(|i| {
        let v = &tag[i + 12..];
        v[..v.find('"').unwrap_or(v.len())].to_string()
    });
    let text_end = tag_end + 1 + html[tag_end + 1..].find('<').unwrap_or(0);
    Some((unescape(&html[tag_end + 1..text_end]), value))
}

/// The value of an attribute of an element's opening tag.
pub fn attribute(element: &str, name: &str) -> Option<String> {
    let open = &element[..element.find('>')?];
    let i = open.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(unescape(&open[i..i + open[i..].find('"')?]))
}

pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

/// A browser driven over the DevTools protocol (loopback only): for what `--dump-dom` and
/// `--screenshot` cannot do — screenshots of one element anywhere on a long page, and typing into
/// a form and clicking its button as a person would.
pub struct Session {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
    child: std::process::Child,
    profile: PathBuf,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.ws.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Chromium {
    /// A browser with one blank page of `width`×`height` CSS pixels.
    pub fn session(&self, width: u32, height: u32) -> Session {
        let profile = std::env::temp_dir().join(format!(
            "allot-chromium-{}-{}",
            std::process::id(),
            NEXT_PROFILE.fetch_add(1, Ordering::Relaxed)
        ));
        let child = Command::new(&self.binary)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .args(["--disable-extensions", "--disable-background-networking", "--hide-scrollbars", "--mute-audio"])
            .args(["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        // Chromium writes the port it bound into the profile folder.
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(profile.join("DevToolsActivePort"))
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse::<u16>().ok())
            {
                break port;
            }
            assert!(Instant::now() < deadline, "chromium did not open its DevTools port within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        let page = loop {
            let targets = http_get(port, "/json/list");
            let list: serde_json::Value = serde_json::from_str(&targets).unwrap_or(serde_json::Value::Null);
            if let Some(url) = list
                .as_array()
                .and_then(|l| l.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break url.to_string();
            }
            assert!(Instant::now() < deadline, "chromium has no page target: {targets}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (ws, _) = tungstenite::connect(page.as_str()).unwrap_or_else(|e| panic!("DevTools {page}: {e}"));
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).expect("a read timeout");
        }
        Session { ws, next_id: 0, child, profile }
    }
}

fn http_get(port: u16, path: &str) -> String {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return String::new() };
    runtime.block_on(async {
        match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    })
}

impl Session {
    /// Call a DevTools method and return its result (events in between are skipped).
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = serde_json::json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(tungstenite::Message::text(message)).unwrap_or_else(|e| panic!("{method}: {e}"));
        loop {
            let m = self.ws.read().unwrap_or_else(|e| panic!("{method}: {e}"));
            let tungstenite::Message::Text(text) = m else { continue };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).expect("DevTools speaks JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression (promises awaited).
    pub fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Poll `expression` until it is true.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.eval(expression) != serde_json::Value::Bool(true) {
            assert!(Instant::now() < deadline, "still not true after {timeout:?}: {expression}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({ "url": url }));
        self.wait_for("document.readyState === 'complete'", Duration::from_secs(60));
    }

    /// The page's DOM, serialized.
    pub fn dom(&mut self) -> String {
        self.eval("document.documentElement.outerHTML").as_str().unwrap_or_default().to_string()
    }

    /// A PNG of the first element matching `selector`, wherever it is on the page.
    pub fn screenshot(&mut self, selector: &str, path: &Path) {
        let selector_js = serde_json::to_string(selector).expect("a string");
        let rect = self.eval(&format!(
            "(() => {{ const r = document.querySelector({selector_js}).getBoundingClientRect(); \
             return {{ x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height }}; }})()"
        ));
        let clip = serde_json::json!({
            "x": rect["x"], "y": rect["y"], "width": rect["width"], "height": rect["height"], "scale": 1
        });
        let shot = self.call(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png", "clip": clip, "captureBeyondViewport": true }),
        );
        let data = base64_decode(shot["data"].as_str().expect("image data"));
        std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Standard base64 (the DevTools protocol's encoding of binary data).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| u32::from(value(c))).collect();
        let n = v.iter().fold(0u32, |acc, x| (acc << 6) | x) << (6 * (4 - v.len()));
        out.extend_from_slice(&n.to_be_bytes()[1..v.len()]);
    }
    out
}
