//! A mocked Kubernetes API server for the adapter's tests (tower-test, as kube-rs's
//! controller-rs does), close enough to a real one that the controller's reflectors run against
//! it unchanged:
//!
//! - objects are stored by path; lists and watches honour label selectors
//!   (`=`, `!=`, `in`, `notin`, exists, `!`) and field selectors (`metadata.name`,
//!   `spec.nodeName`, `status.phase`, … with `=`, `==`, `!=`), across one or all namespaces;
//! - `?watch=true` streams `ADDED`/`MODIFIED`/`DELETED` events from the requested
//!   resourceVersion on (a history is kept, so nothing between list and watch is lost);
//! - writes bump resourceVersion (and `metadata.generation` when the spec changes); PUT is a
//!   compare-and-swap; server-side apply merges by field manager: a manager owns what it applied,
//!   fields it stops sending are removed unless another manager owns them, list-maps
//!   (`conditions`) merge by `type`; merge patches follow RFC 7386;
//! - `scale` subresources of Deployments, StatefulSets and LeaderWorkerSets read and write the
//!   object's `spec.replicas` (LWS's selector selects its leaders only, as upstream);
//! - a registered CRD schema validates created and updated objects (types, required, patterns,
//!   enums, bounds, int-or-string), answering 422 with the field path like a real server;
//! - [`ApiServer::reconcile`] plays the Deployment controller and the scheduler: it creates and
//!   deletes pods toward `spec.replicas` and binds pods to nodes with free GPUs, or marks them
//!   Unschedulable. There is no kubelet: bound pods stay booting unless a test marks them ready.
//!
//! Every request is recorded, so tests assert the exact requests the controller makes.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use allot::prometheus::{Collected, LoadSource, MetricsProblem, ModelMetrics};
use bytes::Bytes;
use futures::StreamExt as _;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use kube::client::Body;
use serde_json::{Value, json};

/// The response body of the mock: whole, or a watch stream.
pub type MockBody = UnsyncBoxBody<Bytes, Infallible>;

/// One request as the API server saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl Recorded {
    /// `METHOD path` (the query left out).
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// A query parameter, decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        query_param(&self.query, key)
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch").as_deref() == Some("true")
    }
}

/// The route of a request path: `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` or
/// `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUB]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    base: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (base, rest) = match parts.as_slice() {
            ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
            ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            // The namespace objects themselves.
            ["namespaces"] => (None, &["namespaces"][..]),
            ["namespaces", name] => {
                return Some(Route {
                    base,
                    namespace: None,
                    plural: "namespaces".into(),
                    name: Some(name.to_string()),
                    sub: None,
                });
            }
            ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        match rest {
            [plural] => Some(Route { base, namespace, plural: plural.to_string(), name: None, sub: None }),
            [plural, name] => {
                Some(Route { base, namespace, plural: plural.to_string(), name: Some(name.to_string()), sub: None })
            }
            [plural, name, sub] => Some(Route {
                base,
                namespace,
                plural: plural.to_string(),
                name: Some(name.to_string()),
                sub: Some(sub.to_string()),
            }),
            _ => None,
        }
    }

    fn object_path(&self, name: &str) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/namespaces/{ns}/{}/{name}", self.base, self.plural),
            None => format!("{}/{}/{name}", self.base, self.plural),
        }
    }

    /// Whether an object path is in this collection (any namespace when the route has none).
    fn contains(&self, object_path: &str) -> bool {
        let Some(r) = Route::parse(object_path) else { return false };
        r.name.is_some()
            && r.sub.is_none()
            && r.base == self.base
            && r.plural == self.plural
            && (self.namespace.is_none() || self.namespace == r.namespace)
    }
}

struct Watcher {
    route: Route,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
    tx: futures::channel::mpsc::UnboundedSender<Bytes>,
}

struct WatchRecord {
    version: u64,
    path: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    failures: BTreeMap<(String, String), u16>,
    requests: Vec<Recorded>,
    version: u64,
    history: Vec<WatchRecord>,
    watchers: Vec<Watcher>,
    /// Per object path, per field manager, the fields it owns.
    owners: BTreeMap<String, BTreeMap<String, BTreeSet<FieldPath>>>,
    /// `openAPIV3Schema` per (group/version base, plural).
    schemas: BTreeMap<(String, String), Value>,
    next_uid: u64,
    /// The time the fake control plane stamps on what it writes.
    now: String,
    /// Watch events kept for watches that start from an older resourceVersion.
    history_limit: usize,
    /// Give every bound pod `Ready=True` on reconcile (a kubelet that starts pods at once).
    kubelet: bool,
}

/// The fake API server's shared state: objects by path, injected failures, the request log.
#[derive(Clone, Default)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    /// Objects handed to clients: list items plus watch events read from the stream.
    sent: Arc<AtomicU64>,
}

impl ApiServer {
    /// A client talking to a fresh fake API server.
    pub fn start() -> (kube::Client, ApiServer) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<MockBody>>();
        let server = ApiServer::default();
        server.lock().now = NOW.into();
        let state = server.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let response = state.answer(request).await;
                    send.send_response(response);
                });
            }
        });
        (kube::Client::new(service, "default"), server)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store an object at its path (replacing what was there), as another client would write it.
    /// A resourceVersion in the object is kept (tests that need exact versions set it).
    pub fn put(&self, path: &str, mut object: Value) {
        let mut s = self.lock();
        s.version += 1;
        let version = s.version;
        if object["metadata"]["resourceVersion"].is_null() {
            object["metadata"]["resourceVersion"] = json!(version.to_string());
        }
        if object["metadata"]["uid"].is_null() {
            s.next_uid += 1;
            object["metadata"]["uid"] = json!(format!("uid-{}", s.next_uid));
        }
        let kind = if s.objects.contains_key(path) { "MODIFIED" } else { "ADDED" };
        if let Some(old) = s.objects.get(path)
            && object["metadata"]["generation"].is_null()
        {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            object["metadata"]["generation"] =
                json!(if old.get("spec") != object.get("spec") { generation + 1 } else { generation });
        } else if object["metadata"]["generation"].is_null() && object.get("spec").is_some() {
            object["metadata"]["generation"] = json!(1);
        }
        s.objects.insert(path.to_string(), object.clone());
        s.notify(version, path, kind, object);
    }

    /// Store an object at the path its apiVersion, kind, namespace and name give.
    pub fn create(&self, object: Value) -> String {
        let path = object_path(&object);
        self.put(&path, object);
        path
    }

    pub fn remove(&self, path: &str) {
        let mut s = self.lock();
        if let Some(object) = s.objects.remove(path) {
            s.version += 1;
            let version = s.version;
            s.notify(version, path, "DELETED", object);
        }
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Objects of a collection path (`/api/v1/namespaces/llm/pods`), sorted by path.
    pub fn list(&self, collection: &str) -> Vec<Value> {
        let route = Route::parse(collection).expect("a collection path");
        self.lock().objects.iter().filter(|(p, _)| route.contains(p)).map(|(_, o)| o.clone()).collect()
    }

    /// Answer `method path` with this HTTP error code from now on.
    pub fn fail(&self, method: &str, path: &str, code: u16) {
        self.lock().failures.insert((method.into(), path.into()), code);
    }

    /// Stop failing `method path`.
    pub fn heal(&self, method: &str, path: &str) {
        self.lock().failures.remove(&(method.into(), path.into()));
    }

    /// Every request so far, and forget them.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.lock().requests)
    }

    /// Objects handed to clients so far (list items and watch events read).
    pub fn objects_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Validate objects of this CRD against its schema from now on, as the API server does.
    pub fn register_crd(&self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().expect("group");
        let plural = crd["spec"]["names"]["plural"].as_str().expect("plural");
        for v in crd["spec"]["versions"].as_array().expect("versions") {
            let version = v["name"].as_str().expect("version name");
            let schema = v["schema"]["openAPIV3Schema"].clone();
            self.lock().schemas.insert((format!("/apis/{group}/{version}"), plural.to_string()), schema);
        }
    }

    /// The time the fake control plane stamps (RFC 3339).
    pub fn set_time(&self, now: &str) {
        self.lock().now = now.to_string();
    }

    /// Keep at most about `n` watch events of history (benchmarks: the mock's own memory).
    pub fn set_history_limit(&self, n: usize) {
        self.lock().history_limit = n;
    }

    /// Let reconcile mark bound pods Ready (a kubelet that starts pods at once).
    pub fn set_kubelet(&self, ready: bool) {
        self.lock().kubelet = ready;
    }

    /// Field managers of an object and the fields each owns (`a.b`, `status.conditions[type=Ready]`).
    pub fn managers(&self, path: &str) -> BTreeMap<String, Vec<String>> {
        self.lock()
            .owners
            .get(path)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.iter().map(|p| p.join(".")).collect())).collect())
            .unwrap_or_default()
    }

    async fn answer(&self, request: Request<Body>) -> Response<MockBody> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = request.into_body().collect_bytes().await.expect("request body");
        let body: Option<Value> = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        let recorded = Recorded { method: method.clone(), path: path.clone(), query, content_type, body };
        let mut s = self.lock();
        s.requests.push(recorded.clone());
        if let Some(code) = s.failures.get(&(method.clone(), path.clone())) {
            return status(*code, "injected failure");
        }
        let Some(route) = Route::parse(&path) else { return status(404, "no such path") };
        match (method.as_str(), &route.name, route.sub.as_deref()) {
            ("GET", None, None) => {
                let labels = match recorded.param("labelSelector").map(|l| LabelSelector::parse(&l)).transpose() {
                    Ok(l) => l,
                    Err(e) => return status(400, &e),
                };
                let fields = match recorded.param("fieldSelector").map(|f| FieldSelector::parse(&f)).transpose() {
                    Ok(f) => f,
                    Err(e) => return status(400, &e),
                };
                if recorded.is_watch() {
                    let from: u64 = recorded.param("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
                    return self.watch(&mut s, route, labels, fields, from);
                }
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(p, o)| route.contains(p) && matches(o, labels.as_ref(), fields.as_ref()))
                    .map(|(_, o)| o.clone())
                    .collect();
                self.sent.fetch_add(items.len() as u64, Ordering::SeqCst);
                let version = s.version.to_string();
                ok(
                    200,
                    &json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": version}, "items": items}),
                )
            }
            ("GET", Some(name), None) => match s.objects.get(&route.object_path(name)) {
                Some(o) => ok(200, o),
                None => status(404, &format!("{} {name:?} not found", route.plural)),
            },
            ("GET", Some(name), Some("scale")) => match s.objects.get(&route.object_path(name)).and_then(scale_of) {
                Some(scale) => ok(200, &scale),
                None => status(404, &format!("{} {name:?} not found", route.plural)),
            },
            ("GET", Some(name), Some("status")) => match s.objects.get(&route.object_path(name)) {
                Some(o) => ok(200, o),
                None => status(404, "not found"),
            },
            ("POST", None, None) => s.create_object(&route, recorded.body.unwrap_or(Value::Null)),
            ("PUT", Some(name), None) => s.replace(&route.object_path(name), recorded.body.unwrap_or(Value::Null)),
            ("DELETE", Some(name), None) => {
                let p = route.object_path(name);
                match s.objects.remove(&p) {
                    Some(o) => {
                        s.version += 1;
                        let v = s.version;
                        s.notify(v, &p, "DELETED", o.clone());
                        ok(200, &o)
                    }
                    None => status(404, "not found"),
                }
            }
            ("PATCH", Some(name), sub) => {
                let object_path = route.object_path(name);
                let body = recorded.body.clone().unwrap_or(Value::Null);
                let apply = recorded.content_type.as_deref().is_some_and(|c| c.starts_with("application/apply-patch"));
                let manager = recorded.param("fieldManager");
                if apply && manager.is_none() {
                    return status(400, "fieldManager is required for apply patch");
                }
                let force = recorded.param("force").as_deref() == Some("true");
                s.patch(&object_path, sub, body, apply, manager, force)
            }
            _ => status(405, "unexpected method"),
        }
    }

    fn watch(
        &self,
        s: &mut State,
        route: Route,
        labels: Option<LabelSelector>,
        fields: Option<FieldSelector>,
        from: u64,
    ) -> Response<MockBody> {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Bytes>();
        for r in s.history.iter().filter(|r| r.version > from) {
            if route.contains(&r.path) && matches(&r.object, labels.as_ref(), fields.as_ref()) {
                let _ = tx.unbounded_send(event_line(r.kind, &r.object));
            }
        }
        s.watchers.push(Watcher { route, labels, fields, tx });
        let sent = self.sent.clone();
        let stream = rx.map(move |line| {
            sent.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Frame::data(line))
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("response")
    }

    // -----------------------------------------------------------------------------------------
    // The fake control plane.

    /// Play the Deployment controller and the scheduler once: pods toward each Deployment's
    /// `spec.replicas` (deleting pending pods first), then bind pending pods to nodes with free
    /// accelerators, or mark them Unschedulable. Returns the pods created and deleted.
    pub fn reconcile(&self) -> (Vec<String>, Vec<String>) {
        let (mut created, mut deleted) = (Vec::new(), Vec::new());
        let deployments: Vec<(String, Value)> = {
            let s = self.lock();
            s.objects
                .iter()
                .filter(|(p, _)| p.contains("/deployments/") && !p.ends_with("/scale"))
                .map(|(p, o)| (p.clone(), o.clone()))
                .collect()
        };
        for (_, d) in deployments {
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
            let name = d["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let desired = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
            let selector = LabelSelector::from_label_selector(&d["spec"]["selector"]);
            let pods_path = format!("/api/v1/namespaces/{ns}/pods");
            let mut pods: Vec<Value> = self
                .list(&pods_path)
                .into_iter()
                .filter(|p| selector.matches(&labels_of(p)) && p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            // The ReplicaSet controller deletes unscheduled pods first, then the newest.
            pods.sort_by_key(|p| {
                (
                    p["spec"]["nodeName"].is_string(),
                    std::cmp::Reverse(p["metadata"]["name"].as_str().unwrap_or_default().to_string()),
                )
            });
            while pods.len() > desired {
                let p = pods.remove(0);
                let path = format!("{pods_path}/{}", p["metadata"]["name"].as_str().unwrap_or_default());
                self.remove(&path);
                deleted.push(path);
            }
            let mut n = 0;
            while pods.len() < desired {
                n += 1;
                let pod_name = loop {
                    let candidate = format!("{name}-{}", self.next_id());
                    if self.get(&format!("{pods_path}/{candidate}")).is_none() {
                        break candidate;
                    }
                };
                let template = &d["spec"]["template"];
                let mut pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod_name, "namespace": ns, "labels": template["metadata"]["labels"].clone(),
                                 "creationTimestamp": self.lock().now.clone()},
                    "spec": template["spec"].clone(),
                    "status": {"phase": "Pending"}
                });
                pod["metadata"]["ownerReferences"] =
                    json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": "rs"}]);
                let path = format!("{pods_path}/{pod_name}");
                self.put(&path, pod.clone());
                created.push(path);
                pods.push(pod);
                if n > 1000 {
                    break;
                }
            }
        }
        self.schedule();
        (created, deleted)
    }

    fn next_id(&self) -> u64 {
        let mut s = self.lock();
        s.next_uid += 1;
        s.next_uid
    }

    /// Bind every pending, ungated pod to the first node (by name) with room for its accelerator
    /// requests and matching its node selector; else mark it Unschedulable.
    pub fn schedule(&self) {
        let now = self.lock().now.clone();
        let kubelet = self.lock().kubelet;
        let nodes = self.list("/api/v1/nodes");
        let all_pods = self.list("/api/v1/pods");
        // Free accelerators per node.
        let mut free: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for n in &nodes {
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if !ready || n["spec"]["unschedulable"] == json!(true) {
                continue;
            }
            let name = n["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let alloc: BTreeMap<String, i64> = n["status"]["allocatable"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| is_accelerator(k))
                .filter_map(|(k, v)| v.as_str().and_then(|s| s.parse().ok()).map(|q| (k.clone(), q)))
                .collect();
            free.insert(name, alloc);
        }
        for p in &all_pods {
            if let Some(node) = p["spec"]["nodeName"].as_str()
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                && let Some(f) = free.get_mut(node)
            {
                for (r, q) in requests_of(p) {
                    *f.entry(r).or_insert(0) -= q;
                }
            }
        }
        let mut pending: Vec<Value> = all_pods
            .into_iter()
            .filter(|p| {
                p["spec"]["nodeName"].is_null() && p["spec"]["schedulingGates"].as_array().is_none_or(|g| g.is_empty())
            })
            .collect();
        pending.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string());
        for mut p in pending {
            let wanted = requests_of(&p);
            let selector: BTreeMap<String, String> = p["spec"]["nodeSelector"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let fits = |name: &str, f: &BTreeMap<String, i64>| {
                let node = nodes.iter().find(|n| n["metadata"]["name"] == name);
                let labels = node.map(labels_of).unwrap_or_default();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                    && wanted.iter().all(|(r, q)| f.get(r).copied().unwrap_or(0) >= *q)
            };
            let node = free.iter().find(|(n, f)| fits(n, f)).map(|(n, _)| n.clone());
            let path = format!(
                "/api/v1/namespaces/{}/pods/{}",
                p["metadata"]["namespace"].as_str().unwrap_or("default"),
                p["metadata"]["name"].as_str().unwrap_or_default()
            );
            match node {
                Some(node) => {
                    let f = free.get_mut(&node).expect("found above");
                    for (r, q) in &wanted {
                        *f.entry(r.clone()).or_insert(0) -= q;
                    }
                    p["spec"]["nodeName"] = json!(node);
                    p["status"] = json!({"phase": "Running", "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": if kubelet { "True" } else { "False" }, "lastTransitionTime": now}]});
                }
                None => {
                    let resource = wanted.keys().next().cloned().unwrap_or_else(|| "cpu".into());
                    let already = p["status"]["conditions"][0]["reason"] == "Unschedulable";
                    if already {
                        continue;
                    }
                    p["status"] = json!({"phase": "Pending", "conditions": [{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": format!("0/{} nodes are available: {} Insufficient {resource}.", nodes.len(), nodes.len()),
                        "lastTransitionTime": now}]});
                }
            }
            p["metadata"]["resourceVersion"] = Value::Null;
            self.put(&path, p);
        }
    }

    /// Mark a pod Ready, as its kubelet would once the model is loaded.
    pub fn mark_ready(&self, path: &str) {
        let Some(mut p) = self.get(path) else { return };
        let now = self.lock().now.clone();
        p["status"] = json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now}]});
        p["metadata"]["resourceVersion"] = Value::Null;
        self.put(path, p);
    }
}

impl State {
    fn notify(&mut self, version: u64, path: &str, kind: &'static str, object: Value) {
        self.watchers.retain(|w| !w.tx.is_closed());
        for w in &self.watchers {
            if w.route.contains(path) && matches(&object, w.labels.as_ref(), w.fields.as_ref()) {
                let _ = w.tx.unbounded_send(event_line(kind, &object));
            } else if kind == "MODIFIED" && w.route.contains(path) {
                // An object that stopped matching a selector leaves that watch.
                let _ = self
                    .history
                    .iter()
                    .rev()
                    .find(|r| r.path == path)
                    .filter(|r| matches(&r.object, w.labels.as_ref(), w.fields.as_ref()))
                    .map(|_| w.tx.unbounded_send(event_line("DELETED", &object)));
            }
        }
        self.history.push(WatchRecord { version, path: path.to_string(), kind, object });
        let limit = if self.history_limit == 0 { 200_000 } else { self.history_limit };
        if self.history.len() > limit {
            self.history.drain(..limit / 2);
        }
    }

    fn validate(&self, path: &str, object: &Value) -> Result<(), String> {
        let Some(route) = Route::parse(path) else { return Ok(()) };
        let Some(schema) = self.schemas.get(&(route.base.clone(), route.plural.clone())) else { return Ok(()) };
        let mut problems = Vec::new();
        validate(schema, object, "", &mut problems);
        if problems.is_empty() { Ok(()) } else { Err(problems.join(", ")) }
    }

    fn create_object(&mut self, route: &Route, mut object: Value) -> Response<MockBody> {
        let name = match object["metadata"]["name"].as_str() {
            Some(n) => n.to_string(),
            None => {
                self.next_uid += 1;
                format!("{}{}", object["metadata"]["generateName"].as_str().unwrap_or("obj-"), self.next_uid)
            }
        };
        object["metadata"]["name"] = json!(name);
        if let Some(ns) = &route.namespace {
            object["metadata"]["namespace"] = json!(ns);
        }
        let path = route.object_path(&name);
        if self.objects.contains_key(&path) {
            return status(409, &format!("{} {name:?} already exists", route.plural));
        }
        if let Err(e) = self.validate(&path, &object) {
            return status(422, &e);
        }
        self.version += 1;
        self.next_uid += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        object["metadata"]["uid"] = json!(format!("uid-{}", self.next_uid));
        object["metadata"]["creationTimestamp"] = json!(self.now.clone());
        if object.get("spec").is_some() {
            object["metadata"]["generation"] = json!(1);
        }
        self.objects.insert(path.clone(), object.clone());
        let v = self.version;
        self.notify(v, &path, "ADDED", object.clone());
        ok(201, &object)
    }

    fn replace(&mut self, path: &str, mut object: Value) -> Response<MockBody> {
        let Some(stored) = self.objects.get(path) else { return status(404, "not found") };
        if stored["metadata"]["resourceVersion"] != object["metadata"]["resourceVersion"] {
            return status(409, "the object has been modified; please apply your changes to the latest version");
        }
        if let Err(e) = self.validate(path, &object) {
            return status(422, &e);
        }
        let generation = stored["metadata"]["generation"].as_i64();
        let spec_changed = stored.get("spec") != object.get("spec");
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        object["metadata"]["uid"] = stored["metadata"]["uid"].clone();
        if let Some(g) = generation {
            object["metadata"]["generation"] = json!(if spec_changed { g + 1 } else { g });
        }
        self.objects.insert(path.to_string(), object.clone());
        let v = self.version;
        self.notify(v, path, "MODIFIED", object.clone());
        ok(200, &object)
    }

    fn patch(
        &mut self,
        path: &str,
        sub: Option<&str>,
        body: Value,
        apply: bool,
        manager: Option<String>,
        force: bool,
    ) -> Response<MockBody> {
        let Some(stored) = self.objects.get(path).cloned() else { return status(404, "not found") };
        let mut object = stored.clone();
        match sub {
            Some("scale") => {
                if scale_of(&stored).is_none() {
                    return status(404, "the resource has no scale subresource");
                }
                let Some(replicas) = body["spec"]["replicas"].as_i64() else {
                    return status(422, "spec.replicas: Required value");
                };
                object["spec"]["replicas"] = json!(replicas);
            }
            Some("status") | None => {
                let scope = if sub == Some("status") { Scope::Status } else { Scope::Main };
                if apply {
                    let manager = manager.unwrap_or_default();
                    let owners = self.owners.entry(path.to_string()).or_default();
                    if let Err(conflict) = server_side_apply(&mut object, &body, &manager, owners, scope, force) {
                        return status(409, &conflict);
                    }
                } else {
                    let part = match scope {
                        Scope::Status => json!({"status": body.get("status").cloned().unwrap_or(Value::Null)}),
                        Scope::Main => {
                            let mut b = body.clone();
                            if let Some(m) = b.as_object_mut() {
                                m.remove("status");
                            }
                            b
                        }
                    };
                    merge_patch(&mut object, &part);
                }
            }
            Some(other) => return status(404, &format!("no subresource {other}")),
        }
        if let Err(e) = self.validate(path, &object) {
            return status(422, &e);
        }
        if object == stored {
            return ok(200, &object);
        }
        if stored.get("spec") != object.get("spec")
            && let Some(g) = stored["metadata"]["generation"].as_i64()
        {
            object["metadata"]["generation"] = json!(g + 1);
        }
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.objects.insert(path.to_string(), object.clone());
        let v = self.version;
        self.notify(v, path, "MODIFIED", object.clone());
        match sub {
            Some("scale") => ok(200, &scale_of(&object).expect("checked above")),
            _ => ok(200, &object),
        }
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

fn ok(code: u16, object: &Value) -> Response<MockBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(object).expect("json"))).boxed_unsync())
        .expect("response")
}

fn status(code: u16, message: &str) -> Response<MockBody> {
    let reason = match code {
        400 => "BadRequest",
        404 => "NotFound",
        409 => "Conflict",
        403 => "Forbidden",
        422 => "Invalid",
        _ => "InternalError",
    };
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).expect("json"))).boxed_unsync())
        .expect("response")
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex =
            (bytes[i] == b'%' && i + 3 <= bytes.len()).then(|| u8::from_str_radix(&s[i + 1..i + 3], 16).ok()).flatten();
        match (bytes[i], hex) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of an object from its apiVersion, kind, namespace and name.
pub fn object_path(object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let name = object["metadata"]["name"].as_str().expect("metadata.name");
    let plural = plural(kind);
    let base = if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
    match (object["metadata"]["namespace"].as_str(), kind) {
        (_, "Node" | "Namespace" | "CustomResourceDefinition") | (None, _) => format!("{base}/{plural}/{name}"),
        (Some(ns), _) => format!("{base}/namespaces/{ns}/{plural}/{name}"),
    }
}

/// The lower-case plural of a kind, as the API server names its resources.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.as_str() {
        "endpoints" => lower,
        _ if lower.ends_with('s') => format!("{lower}es"),
        _ if lower.ends_with('y') => format!("{}ies", &lower[..lower.len() - 1]),
        _ => format!("{lower}s"),
    }
}

fn labels_of(o: &Value) -> BTreeMap<String, String> {
    o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

fn is_accelerator(resource: &str) -> bool {
    resource == "nvidia.com/gpu" || resource == "amd.com/gpu" || resource.starts_with("nvidia.com/mig-")
}

/// Accelerator requests of a pod (requests, else limits), summed over its containers.
fn requests_of(p: &Value) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for c in p["spec"]["containers"].as_array().into_iter().flatten() {
        let res = &c["resources"];
        let mut names: BTreeSet<String> = BTreeSet::new();
        for part in ["requests", "limits"] {
            names.extend(
                res[part].as_object().into_iter().flatten().map(|(k, _)| k.clone()).filter(|k| is_accelerator(k)),
            );
        }
        for r in names {
            let q = res["requests"][&r]
                .as_str()
                .or(res["limits"][&r].as_str())
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0);
            *out.entry(r).or_insert(0) += q;
        }
    }
    out.retain(|_, q| *q > 0);
    out
}

/// The `scale` subresource of a Deployment, StatefulSet or LeaderWorkerSet.
fn scale_of(o: &Value) -> Option<Value> {
    let kind = o["kind"].as_str()?;
    let name = o["metadata"]["name"].as_str()?;
    let selector = match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            LabelSelector::from_label_selector(&o["spec"]["selector"]).to_string()
        }
        // LWS selects its leaders only (its controller sets status.hpaPodSelector so).
        "LeaderWorkerSet" => o["status"]["hpaPodSelector"].as_str().map(str::to_string).unwrap_or_else(|| {
            format!("leaderworkerset.sigs.k8s.io/name={name},leaderworkerset.sigs.k8s.io/worker-index=0")
        }),
        _ => return None,
    };
    let replicas = o["spec"]["replicas"].as_i64().unwrap_or(1);
    Some(json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": name, "namespace": o["metadata"]["namespace"], "resourceVersion": o["metadata"]["resourceVersion"]},
        "spec": {"replicas": replicas},
        "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(replicas), "selector": selector}
    }))
}

fn matches(o: &Value, labels: Option<&LabelSelector>, fields: Option<&FieldSelector>) -> bool {
    labels.is_none_or(|l| l.matches(&labels_of(o))) && fields.is_none_or(|f| f.matches(o))
}

// ---------------------------------------------------------------------------------------------
// Selectors, implemented independently of Allot's own parser.

#[derive(Clone, Debug, PartialEq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A label selector in its string form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some(k) = p.strip_prefix('!') {
                LabelReq::Absent(k.trim().into())
            } else if let Some((k, v)) = p.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                LabelReq::In(k.trim().into(), set(rest)?)
            } else if p.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                LabelReq::Exists(p.into())
            } else {
                return Err(format!("unable to parse requirement: {p:?}"));
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// From a structured `metav1.LabelSelector` (`matchLabels`, `matchExpressions`).
    pub fn from_label_selector(v: &Value) -> Self {
        let mut reqs: Vec<LabelReq> = v["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| LabelReq::Eq(k.clone(), v.as_str().unwrap_or_default().into()))
            .collect();
        for e in v["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> =
                e["values"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
            reqs.push(match e["operator"].as_str() {
                Some("In") => LabelReq::In(key, values),
                Some("NotIn") => LabelReq::NotIn(key, values),
                Some("DoesNotExist") => LabelReq::Absent(key),
                _ => LabelReq::Exists(key),
            });
        }
        Self(reqs)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => labels.get(k) == Some(v),
            LabelReq::Ne(k, v) => labels.get(k) != Some(v),
            LabelReq::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            LabelReq::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::Absent(k) => !labels.contains_key(k),
        })
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                LabelReq::Eq(k, v) => format!("{k}={v}"),
                LabelReq::Ne(k, v) => format!("{k}!={v}"),
                LabelReq::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                LabelReq::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                LabelReq::Exists(k) => k.clone(),
                LabelReq::Absent(k) => format!("!{k}"),
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

fn set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or("expected (…)")?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

/// A field selector: `path=value`, `path==value`, `path!=value`, comma-separated.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for p in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, eq, value) = if let Some((k, v)) = p.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector: {p:?}"));
            };
            if !["metadata.name", "metadata.namespace", "spec.nodeName", "status.phase", "spec.schedulerName"]
                .contains(&path)
            {
                return Err(format!("field label not supported: {path}"));
            }
            out.push((path.to_string(), eq, value.to_string()));
        }
        Ok(Self(out))
    }

    pub fn matches(&self, o: &Value) -> bool {
        self.0.iter().all(|(path, eq, value)| {
            let mut v = o;
            for part in path.split('.') {
                v = &v[part];
            }
            let actual = v.as_str().unwrap_or_default();
            (actual == value) == *eq
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side apply and merge patch.

/// A field path; list-map entries are `[type=X]` segments.
pub type FieldPath = Vec<String>;

#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Main,
    Status,
}

/// List-maps merge by key (metav1.Condition lists keyed by `type`).
fn list_map_key(segment: &str) -> Option<&'static str> {
    (segment == "conditions").then_some("type")
}

fn leaf_paths(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaf_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if prefix.last().and_then(|s| list_map_key(s)).is_some() => {
            let key = list_map_key(prefix.last().expect("checked")).expect("checked");
            for item in items {
                let id = item[key].as_str().unwrap_or_default();
                prefix.push(format!("[{key}={id}]"));
                leaf_paths(item, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn in_scope(path: &FieldPath, scope: Scope) -> bool {
    let first = path.first().map(String::as_str);
    match scope {
        Scope::Status => first == Some("status"),
        Scope::Main => {
            let identity =
                first == Some("metadata") && matches!(path.get(1).map(String::as_str), Some("name" | "namespace"));
            !(matches!(first, Some("status" | "apiVersion" | "kind")) || identity)
        }
    }
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((head, rest)) = path.split_first() else { return };
    if let Some(inner) = head.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let (key, id) = inner.split_once('=').unwrap_or((inner, ""));
        if let Value::Array(items) = v {
            if rest.is_empty() {
                items.retain(|i| i[key].as_str() != Some(id));
            } else if let Some(item) = items.iter_mut().find(|i| i[key].as_str() == Some(id)) {
                remove_path(item, rest);
                let only_key = item.as_object().is_some_and(|m| m.len() <= 1);
                if only_key {
                    items.retain(|i| i[key].as_str() != Some(id));
                }
            }
        }
        return;
    }
    if let Value::Object(m) = v {
        if rest.is_empty() {
            m.remove(head);
        } else if let Some(child) = m.get_mut(head) {
            remove_path(child, rest);
            if child.as_object().is_some_and(|c| c.is_empty()) {
                m.remove(head);
            }
        }
    }
}

fn apply_merge(stored: &mut Value, applied: &Value, segment: Option<&str>) {
    match (stored, applied) {
        (Value::Object(s), Value::Object(a)) => {
            for (k, av) in a {
                let entry = s.entry(k.clone()).or_insert(Value::Null);
                if entry.is_null() {
                    *entry = av.clone();
                } else {
                    apply_merge(entry, av, Some(k));
                }
            }
        }
        (Value::Array(s), Value::Array(a)) if segment.and_then(list_map_key).is_some() => {
            let key = segment.and_then(list_map_key).expect("checked");
            for item in a {
                let id = &item[key];
                match s.iter_mut().find(|i| &i[key] == id) {
                    Some(existing) => apply_merge(existing, item, None),
                    None => s.push(item.clone()),
                }
            }
        }
        (s, a) => *s = a.clone(),
    }
}

/// Server-side apply of `applied` by `manager` into `stored`, within `scope` (`status` for the
/// status subresource). A conflict (another manager owns a field with a different value) fails
/// unless `force`.
fn server_side_apply(
    stored: &mut Value,
    applied: &Value,
    manager: &str,
    owners: &mut BTreeMap<String, BTreeSet<FieldPath>>,
    scope: Scope,
    force: bool,
) -> Result<(), String> {
    let mut paths = BTreeSet::new();
    leaf_paths(applied, &mut Vec::new(), &mut paths);
    paths.retain(|p| in_scope(p, scope));
    if !force {
        for (other, owned) in owners.iter() {
            if other == manager {
                continue;
            }
            if let Some(p) = paths.iter().find(|p| owned.contains(*p)) {
                let mut current = &*stored;
                let mut wanted = applied;
                for seg in p {
                    current = &current[seg.as_str()];
                    wanted = &wanted[seg.as_str()];
                }
                if current != wanted {
                    return Err(format!("conflict with {other:?}: {}", p.join(".")));
                }
            }
        }
    }
    let before: BTreeSet<FieldPath> =
        owners.get(manager).map(|s| s.iter().filter(|p| in_scope(p, scope)).cloned().collect()).unwrap_or_default();
    for gone in before.difference(&paths) {
        let shared = owners.iter().any(|(m, owned)| m != manager && owned.contains(gone));
        if !shared {
            remove_path(stored, gone);
        }
    }
    let mut part = applied.clone();
    if let Value::Object(m) = &mut part {
        match scope {
            Scope::Status => m.retain(|k, _| k == "status"),
            Scope::Main => m.retain(|k, _| k != "status" && k != "apiVersion" && k != "kind"),
        }
    }
    apply_merge(stored, &part, None);
    for (m, owned) in owners.iter_mut() {
        if m != manager {
            owned.retain(|p| !paths.contains(p));
        }
    }
    let entry = owners.entry(manager.to_string()).or_default();
    entry.retain(|p| !in_scope(p, scope));
    entry.extend(paths);
    Ok(())
}

/// RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Structural schema validation (what the API server checks for a CRD).

/// What an API server would refuse in `object` under the `openAPIV3Schema` of the first version
/// of `crd` (empty: accepted).
pub fn schema_problems(crd: &Value, object: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    validate(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], object, "", &mut problems);
    problems
}

fn validate(schema: &Value, v: &Value, path: &str, problems: &mut Vec<String>) {
    let at = |p: &str| if p.is_empty() { "<root>".to_string() } else { p.trim_start_matches('.').to_string() };
    if v.is_null() {
        return;
    }
    if schema["x-kubernetes-int-or-string"] == json!(true) {
        let ok = v.is_i64() || v.is_u64() || v.is_string() || v.as_f64().is_some_and(|f| f.fract() == 0.0);
        if !ok {
            problems.push(format!("{}: Invalid value: must be an integer or a string", at(path)));
            return;
        }
        // `pattern` and `minLength` apply to strings only, `minimum` to numbers only (JSON Schema).
        if let Some(s) = v.as_str() {
            check_string(schema, s, &at(path), problems);
        } else if let Some(n) = v.as_f64() {
            check_number(schema, n, &at(path), problems);
        }
        return;
    }
    let type_ok = match schema["type"].as_str() {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !type_ok {
        problems.push(format!(
            "{}: Invalid value: must be of type {}",
            at(path),
            schema["type"].as_str().unwrap_or("?")
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        problems.push(format!("{}: Unsupported value: {v}", at(path)));
    }
    match v {
        Value::String(s) => check_string(schema, s, &at(path), problems),
        Value::Number(n) => check_number(schema, n.as_f64().unwrap_or(0.0), &at(path), problems),
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                problems.push(format!("{}: Invalid value: must have at least {min} items", at(path)));
            }
            for (i, item) in items.iter().enumerate() {
                validate(&schema["items"], item, &format!("{path}[{i}]"), problems);
            }
        }
        Value::Object(m) => {
            for r in schema["required"].as_array().into_iter().flatten().filter_map(|r| r.as_str()) {
                if !m.contains_key(r) {
                    problems.push(format!("{}.{r}: Required value", at(path)));
                }
            }
            if let Some(min) = schema["minProperties"].as_u64()
                && (m.len() as u64) < min
            {
                problems.push(format!("{}: Invalid value: must have at least {min} properties", at(path)));
            }
            for (k, child) in m {
                if path.is_empty() && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                let sub = &schema["properties"][k];
                if !sub.is_null() {
                    validate(sub, child, &format!("{path}.{k}"), problems);
                } else if schema["additionalProperties"].is_object() {
                    validate(&schema["additionalProperties"], child, &format!("{path}.{k}"), problems);
                }
            }
        }
        _ => {}
    }
}

fn check_string(schema: &Value, s: &str, at: &str, problems: &mut Vec<String>) {
    if let Some(min) = schema["minLength"].as_u64()
        && (s.chars().count() as u64) < min
    {
        problems.push(format!("{at}: Invalid value: {s:?}: should be at least {min} chars long"));
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        let re = regex::Regex::new(pattern).expect("a valid pattern in the schema");
        if !re.is_match(s) {
            problems.push(format!("{at}: Invalid value: {s:?}: should match '{pattern}'"));
        }
    }
}

fn check_number(schema: &Value, n: f64, at: &str, problems: &mut Vec<String>) {
    if let Some(min) = schema["minimum"].as_f64()
        && n < min
    {
        problems.push(format!("{at}: Invalid value: {n}: should be greater than or equal to {min}"));
    }
    if let Some(max) = schema["maximum"].as_f64()
        && n > max
    {
        problems.push(format!("{at}: Invalid value: {n}: should be less than or equal to {max}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Load.

/// A load source that answers from tables the test edits: vLLM metrics per model, and the
/// gateway's queue (requests waiting per model, or why it cannot be read).
#[derive(Clone, Default)]
pub struct FakeLoad(
    pub Arc<Mutex<BTreeMap<String, Result<ModelMetrics, MetricsProblem>>>>,
    pub Arc<Mutex<FakeGateway>>,
);

/// The gateway's queue per model, and a problem that replaces the answer while set.
pub type FakeGateway = (BTreeMap<String, f64>, Option<MetricsProblem>);

impl FakeLoad {
    pub fn set(&self, model: &str, value: Result<ModelMetrics, MetricsProblem>) {
        self.0.lock().expect("lock").insert(model.to_string(), value);
    }

    /// Forget a model's metrics: Prometheus has no series for it (no pod exports them).
    pub fn remove(&self, model: &str) {
        self.0.lock().expect("lock").remove(model);
    }

    /// Requests waiting at the gateway for `model`.
    pub fn set_gateway(&self, model: &str, waiting: f64) {
        let mut gateway = self.1.lock().expect("lock");
        gateway.0.insert(model.to_string(), waiting);
        gateway.1 = None;
    }

    /// The gateway's queue cannot be read.
    pub fn fail_gateway(&self, problem: MetricsProblem) {
        self.1.lock().expect("lock").1 = Some(problem);
    }
}

impl LoadSource for FakeLoad {
    fn collect(&self, models: &[String]) -> impl Future<Output = Collected> + Send {
        let table = self.0.lock().expect("lock").clone();
        let out: Collected = models
            .iter()
            .map(|m| (m.clone(), table.get(m).cloned().unwrap_or_else(|| Err(MetricsProblem::Missing(m.clone())))))
            .collect();
        async move { out }
    }

    fn gateway_waiting(
        &self,
        models: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, f64>, MetricsProblem>> + Send {
        let (table, problem) = self.1.lock().expect("lock").clone();
        let answer = match problem {
            Some(p) => Err(p),
            None => Ok(table.into_iter().filter(|(m, _)| models.contains(m)).collect()),
        };
        async move { answer }
    }
}

/// Fresh metrics of a model at `rps`.
pub fn metrics(model: &str, rps: f64, input_tokens: f64, output_tokens: f64) -> ModelMetrics {
    ModelMetrics {
        model: model.into(),
        arrival_rps: rps,
        completion_rps: rps,
        input_tokens: Some(input_tokens),
        output_tokens: Some(output_tokens),
        input_histogram: None,
        output_histogram: None,
        running: 4.0,
        waiting: 0.0,
        ttft_mean_s: Some(0.25),
        itl_mean_s: Some(0.03),
        kv_usage_max: Some(0.5),
        age_s: 10.0,
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

pub const CONFIG_NS: &str = "workload-variant-autoscaler-system";
pub const NS: &str = "llm";
pub const MODEL: &str = "meta-llama/Llama-2-70b";
pub const H100: &str = "NVIDIA-H100-80GB-HBM3";
pub const A100: &str = "NVIDIA-A100-SXM4-80GB";
/// The fixed clock of these tests.
pub const NOW: &str = "2026-11-23T10:00:00Z";

pub fn configmap_path(name: &str) -> String {
    format!("/api/v1/namespaces/{CONFIG_NS}/configmaps/{name}")
}

pub fn va_path(name: &str) -> String {
    format!("/apis/llmd.ai/v1alpha1/namespaces/{NS}/variantautoscalings/{name}")
}

pub fn deployment_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
}

pub fn scale_path(name: &str) -> String {
    format!("{}/scale", deployment_path(name))
}

pub fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/pods/{name}")
}

/// WVA's two ConfigMaps with H100 and A100 prices (cents per GPU-hour) and one class; plus an
/// `allot-config` with `allot_config` YAML (removed when `None`).
pub fn install_config(server: &ApiServer, allot_config: Option<&str>) {
    server.put(
        &configmap_path("accelerator-unit-costs"),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "accelerator-unit-costs", "namespace": CONFIG_NS},
               "data": {"H100": format!("{{\"device\": \"{H100}\", \"cost\": \"425.00\"}}"),
                        "A100": format!("{{\"device\": \"{A100}\", \"cost\": \"221.00\"}}")}}),
    );
    server.put(
        &configmap_path("service-classes-config"),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "service-classes-config", "namespace": CONFIG_NS},
               "data": {"premium.yaml": format!("name: Premium\npriority: 1\ndata:\n  - model: {MODEL}\n    slo-tpot: 80\n    slo-ttft: 2000\n")}}),
    );
    match allot_config {
        Some(text) => server.put(
            &configmap_path("allot-config"),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "allot-config", "namespace": CONFIG_NS},
                   "data": {"config.yaml": text}}),
        ),
        None => server.remove(&configmap_path("allot-config")),
    }
}

/// A VariantAutoscaling of Llama-2-70B tp4 on `acc` (Splitwise fits from models/), in WVA's
/// original shape.
pub fn va(name: &str, acc: &str) -> Value {
    let (alpha, beta, delta) =
        if acc == "H100" { ("28.41", "0.3455", "0.1067") } else { ("42.89", "0.4299", "0.3242") };
    json!({
        "apiVersion": "llmd.ai/v1alpha1",
        "kind": "VariantAutoscaling",
        "metadata": {"name": name, "namespace": NS, "generation": 3, "uid": format!("uid-{name}"),
                     "labels": {"inference.optimization/acceleratorName": acc}},
        "spec": {
            "modelID": MODEL,
            "sloClassRef": {"name": "premium", "key": "llama"},
            "modelProfile": {"accelerators": [{
                "acc": acc, "accCount": 4, "maxBatchSize": 64,
                "perfParms": {"decodeParms": {"alpha": alpha, "beta": beta},
                              "prefillParms": {"gamma": "1.5", "delta": delta}}
            }]},
            "minReplicas": 0
        }
    })
}

/// A GPU node of `product`, Ready, tainted like the GPU operator does.
pub fn node(name: &str, product: &str, gpus: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product, "kubernetes.io/hostname": name}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": gpus.to_string()},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// A pod with `gpus` GPUs in `state`: ready, booting, unschedulable or gated.
pub fn pod(name: &str, app: &str, state: &str, node: Option<&str>, gpus: u32) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}, "uid": format!("uid-{name}"),
                     "creationTimestamp": "2026-11-23T09:50:00Z"},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
                                 "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()},
                                               "requests": {"nvidia.com/gpu": gpus.to_string()}}}]}
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p["status"] = match state {
        "ready" => json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T09:50:01Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-23T09:54:00Z"}]}),
        "booting" => json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-23T09:58:00Z"},
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-23T09:58:00Z"}]}),
        "unschedulable" => json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/6 nodes are available: 4 Insufficient nvidia.com/gpu.",
             "lastTransitionTime": "2026-11-23T09:58:30Z"}]}),
        "gated" => {
            p["spec"]["schedulingGates"] = json!([{"name": "kueue.x-k8s.io/admission"}]);
            json!({"phase": "Pending"})
        }
        other => panic!("unknown pod state {other}"),
    };
    p
}

/// A Deployment of `replicas` vLLM pods with `gpus` GPUs each, selecting `app=<name>`.
pub fn deployment(name: &str, replicas: i32, gpus: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
                                  "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()},
                                                "requests": {"nvidia.com/gpu": gpus.to_string()}}}]}}},
        "status": {"replicas": replicas}
    })
}

/// The fleet of the adapter tests: Llama-2-70B on H100 (2 ready replicas) and on A100 (none),
/// four 4-GPU H100 nodes (two with 2 GPUs of someone else's job) and two 8-GPU A100 nodes.
/// `pending` more H100 pods are Unschedulable.
pub fn install_fleet(server: &ApiServer, pending: usize) {
    for (name, acc) in [("llama-h100", "H100"), ("llama-a100", "A100")] {
        if server.get(&va_path(name)).is_none() {
            server.put(&va_path(name), va(name, acc));
        }
    }
    for n in [
        node("h100-a", H100, 4),
        node("h100-b", H100, 4),
        node("h100-c", H100, 4),
        node("h100-d", H100, 4),
        node("a100-a", A100, 8),
        node("a100-b", A100, 8),
    ] {
        let path = object_path(&n);
        if server.get(&path).is_none() {
            server.put(&path, n);
        }
    }
    let mut pods = vec![
        pod("llama-h100-1", "llama-h100", "ready", Some("h100-a"), 4),
        pod("llama-h100-2", "llama-h100", "ready", Some("h100-b"), 4),
        pod("batch-1", "batch", "ready", Some("h100-c"), 2),
        pod("batch-2", "batch", "ready", Some("h100-d"), 2),
    ];
    for i in 0..pending {
        pods.push(pod(&format!("llama-h100-p{i}"), "llama-h100", "unschedulable", None, 4));
    }
    // Pending pods that are no longer wanted go away, as their ReplicaSet deletes them.
    for existing in server.list(&format!("/api/v1/namespaces/{NS}/pods")) {
        let name = existing["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if !pods.iter().any(|p| p["metadata"]["name"] == name) {
            server.remove(&pod_path(&name));
        }
    }
    for p in pods {
        let path = object_path(&p);
        let same = server.get(&path).is_some_and(|old| old["status"] == p["status"] && old["spec"] == p["spec"]);
        if !same {
            server.put(&path, p);
        }
    }
    let mut h100 = deployment("llama-h100", 2 + pending as i32, 4);
    if let Some(old) = server.get(&deployment_path("llama-h100")) {
        h100["metadata"]["generation"] = old["metadata"]["generation"].clone();
    }
    let same = server.get(&deployment_path("llama-h100")).is_some_and(|old| old["spec"] == h100["spec"]);
    if !same {
        server.put(&deployment_path("llama-h100"), h100);
    }
    if server.get(&deployment_path("llama-a100")).is_none() {
        server.put(&deployment_path("llama-a100"), deployment("llama-a100", 0, 4));
    }
}

pub fn now() -> k8s_openapi::jiff::Timestamp {
    NOW.parse().expect("valid timestamp")
}

/// Wait until the controller's caches hold everything the server has sent them and every target
/// it tracks has listed: what a real controller reaches a moment after the cluster changes.
pub async fn settle<L: LoadSource>(server: &ApiServer, cluster: &allot::k8s::KubeCluster<L>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut stable = 0;
    loop {
        let caught_up = cluster.cache().events_seen() == server.objects_sent()
            && cluster.cache().targets_syncing() == 0
            && cluster.cache().unsynced().is_empty();
        stable = if caught_up { stable + 1 } else { 0 };
        // Twice in a row, a few milliseconds apart: scale reads and new watches settle too.
        if stable >= 3 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "caches did not settle: seen {} of {} objects, {} targets syncing, unsynced {:?}",
            cluster.cache().events_seen(),
            server.objects_sent(),
            cluster.cache().targets_syncing(),
            cluster.cache().unsynced()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
