//! A mocked Kubernetes API server for the adapter's tests (tower-test, as kube-rs's
//! controller-rs does): it serves objects by path, keeps what is written (status patches, scale
//! patches, Events, Leases with resourceVersion checks) and records every request, so tests
//! assert the exact requests the controller makes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use allot::prometheus::{Collected, LoadSource, MetricsProblem, ModelMetrics};
use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

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
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    failures: BTreeMap<(String, String), u16>,
    requests: Vec<Recorded>,
    next_version: u64,
}

/// The fake API server's shared state: objects by path, injected failures, the request log.
#[derive(Clone, Default)]
pub struct ApiServer(Arc<Mutex<State>>);

impl ApiServer {
    /// A client talking to a fresh fake API server.
    pub fn start() -> (kube::Client, ApiServer) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = ApiServer::default();
        let state = server.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = state.answer(request).await;
                send.send_response(response);
            }
        });
        (kube::Client::new(service, "default"), server)
    }

    pub fn put(&self, path: &str, object: Value) {
        self.0.lock().expect("lock").objects.insert(path.to_string(), object);
    }

    pub fn remove(&self, path: &str) {
        self.0.lock().expect("lock").objects.remove(path);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().expect("lock").objects.get(path).cloned()
    }

    /// Answer `method path` with this HTTP error code from now on.
    pub fn fail(&self, method: &str, path: &str, code: u16) {
        self.0.lock().expect("lock").failures.insert((method.into(), path.into()), code);
    }

    /// Every request so far, and forget them.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.0.lock().expect("lock").requests)
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = request.into_body().collect_bytes().await.expect("request body");
        let body: Option<Value> = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        let mut state = self.0.lock().expect("lock");
        state.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query,
            content_type,
            body: body.clone(),
        });
        if let Some(code) = state.failures.get(&(method.clone(), path.clone())) {
            return status(*code, "injected failure");
        }
        match method.as_str() {
            "GET" => match state.objects.get(&path) {
                Some(o) => ok(200, o),
                None => status(404, "not found"),
            },
            "PATCH" => {
                let body = body.unwrap_or(Value::Null);
                if let Some(base) = path.strip_suffix("/status") {
                    let Some(object) = state.objects.get_mut(base) else { return status(404, "not found") };
                    object["status"] = body["status"].clone();
                    let o = object.clone();
                    return ok(200, &o);
                }
                if path.ends_with("/scale") {
                    let Some(scale) = state.objects.get_mut(&path) else { return status(404, "not found") };
                    scale["spec"]["replicas"] = body["spec"]["replicas"].clone();
                    let o = scale.clone();
                    return ok(200, &o);
                }
                status(405, "unexpected patch")
            }
            "POST" => {
                let mut object = body.unwrap_or(Value::Null);
                state.next_version += 1;
                let name = object["metadata"]["name"].as_str().unwrap_or("unnamed").to_string();
                let item = format!("{path}/{name}");
                if state.objects.contains_key(&item) {
                    return status(409, "already exists");
                }
                object["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
                state.objects.insert(item, object.clone());
                ok(201, &object)
            }
            "PUT" => {
                let mut object = body.unwrap_or(Value::Null);
                let Some(stored) = state.objects.get(&path) else { return status(404, "not found") };
                if stored["metadata"]["resourceVersion"] != object["metadata"]["resourceVersion"] {
                    return status(409, "the object has been modified");
                }
                state.next_version += 1;
                object["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
                state.objects.insert(path, object.clone());
                ok(200, &object)
            }
            _ => status(405, "unexpected method"),
        }
    }
}

fn ok(code: u16, object: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(object).expect("json")))
        .expect("response")
}

fn status(code: u16, message: &str) -> Response<Body> {
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        403 => "Forbidden",
        _ => "InternalError",
    };
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("response")
}

/// A load source that answers from a table the test edits.
#[derive(Clone, Default)]
pub struct FakeLoad(pub Arc<Mutex<BTreeMap<String, Result<ModelMetrics, MetricsProblem>>>>);

impl FakeLoad {
    pub fn set(&self, model: &str, value: Result<ModelMetrics, MetricsProblem>) {
        self.0.lock().expect("lock").insert(model.to_string(), value);
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
}

/// Fresh metrics of a model at `rps`.
pub fn metrics(model: &str, rps: f64, input_tokens: f64, output_tokens: f64) -> ModelMetrics {
    ModelMetrics {
        model: model.into(),
        arrival_rps: rps,
        completion_rps: rps,
        input_tokens: Some(input_tokens),
        output_tokens: Some(output_tokens),
        running: 4.0,
        waiting: 0.0,
        ttft_mean_s: Some(0.25),
        itl_mean_s: Some(0.03),
        age_s: 10.0,
    }
}

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

pub fn scale_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}/scale")
}

pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

/// WVA's two ConfigMaps with H100 and A100 prices (cents per GPU-hour) and one class; plus an
/// `allot-config` with `extra` YAML.
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

/// A VariantAutoscaling of Llama-2-70B tp4 on `acc` (Splitwise fits from models/).
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

/// A 4-GPU node of `product`, Ready, tainted like the GPU operator does.
pub fn node(name: &str, product: &str, gpus: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "96", "nvidia.com/gpu": gpus.to_string()},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// A pod with `gpus` GPUs in `state`: ready, booting, unschedulable or gated.
pub fn pod(name: &str, app: &str, state: &str, node: Option<&str>, gpus: u32) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app},
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

pub fn scale(name: &str, replicas: i32) -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"replicas": replicas},
           "status": {"replicas": replicas, "selector": format!("app={name}")}})
}

/// The fleet of the adapter tests: Llama-2-70B on H100 (2 ready replicas) and on A100 (none),
/// four 4-GPU H100 nodes (two with 2 GPUs of someone else's job) and two 8-GPU A100 nodes.
/// `pending` more H100 pods are Unschedulable.
pub fn install_fleet(server: &ApiServer, pending: usize) {
    server.put(
        "/apis/llmd.ai/v1alpha1/variantautoscalings",
        list(
            "VariantAutoscalingList",
            vec![server_va(server, "llama-h100", "H100"), server_va(server, "llama-a100", "A100")],
        ),
    );
    server.put(
        "/api/v1/nodes",
        list(
            "NodeList",
            vec![
                node("h100-a", H100, 4),
                node("h100-b", H100, 4),
                node("h100-c", H100, 4),
                node("h100-d", H100, 4),
                node("a100-a", A100, 8),
                node("a100-b", A100, 8),
            ],
        ),
    );
    let mut pods = vec![
        pod("llama-h100-1", "llama-h100", "ready", Some("h100-a"), 4),
        pod("llama-h100-2", "llama-h100", "ready", Some("h100-b"), 4),
        pod("batch-1", "batch", "ready", Some("h100-c"), 2),
        pod("batch-2", "batch", "ready", Some("h100-d"), 2),
    ];
    for i in 0..pending {
        pods.push(pod(&format!("llama-h100-p{i}"), "llama-h100", "unschedulable", None, 4));
    }
    server.put("/api/v1/pods", list("PodList", pods));
    server.put(&scale_path("llama-h100"), scale("llama-h100", 2 + pending as i32));
    if server.get(&scale_path("llama-a100")).is_none() {
        server.put(&scale_path("llama-a100"), scale("llama-a100", 0));
    }
}

/// The VA as stored (keeping the status the controller wrote), or a fresh one.
fn server_va(server: &ApiServer, name: &str, acc: &str) -> Value {
    let path = va_path(name);
    match server.get(&path) {
        Some(v) => v,
        None => {
            let v = va(name, acc);
            server.put(&path, v.clone());
            v
        }
    }
}

pub fn now() -> k8s_openapi::jiff::Timestamp {
    NOW.parse().expect("valid timestamp")
}
