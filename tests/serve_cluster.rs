//! `allot serve --cluster` outside a cluster: a clear error and a non-zero exit, never a panic
//! or a controller running on nothing. (With a cluster: tests/k8s_e2e.rs.)

use std::process::Command;

#[test]
fn without_kubernetes_configuration_it_says_so_and_exits() {
    let home = std::env::temp_dir().join(format!("allot-no-kube-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("temp home");
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["serve", "--cluster", "--listen", "127.0.0.1:0"])
        .env("HOME", &home)
        .env("KUBECONFIG", home.join("missing-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_dir_all(&home);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no Kubernetes configuration"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn cluster_and_simulate_are_exclusive() {
    let out = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["serve", "--cluster", "--simulate"])
        .output()
        .expect("the binary runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
