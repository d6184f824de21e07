//! The fleet's deployment files (`deploy/k8s`, `deploy/nats`, `deploy/systemd`) against the real
//! tools: Kubernetes manifests validated offline by `kubernetes-validate` (the PyPI package ships
//! the schemas; `tests/run.sh` installs it beside nats-server), NATS configurations checked —
//! and the single-node one started — by nats-server, the systemd unit by `systemd-analyze verify`
//! when the machine has it, the sidecar's config map by Portcullis's own config parser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/nats.rs"]
mod nats_server;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `kubernetes-validate`: `$KUBERNETES_VALIDATE_BIN`, else beside the nats-server tests/run.sh
/// installs.
fn kubernetes_validate() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let p = nats_server::binary().with_file_name("kubernetes-validate");
    assert!(
        p.exists(),
        "no kubernetes-validate at {}: run tests/run.sh or set KUBERNETES_VALIDATE_BIN",
        p.display()
    );
    p
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "{v:?}");
    v
}

#[test]
fn kubernetes_manifests_pass_the_schemas_and_a_bad_one_does_not() {
    let out = Command::new(kubernetes_validate())
        .arg("--strict")
        .args(manifests())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for kind in [
        "statefulset/nats",
        "deployment/portcullis-control",
        "deployment/gateway",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind}: {text}"
        );
    }
    // The validator does reject: the gateway with a misspelt field.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let gateway = std::fs::read_to_string(root().join("deploy/k8s/gateway.yaml")).unwrap();
    std::fs::write(&bad, gateway.replace("replicas: 2", "replicaz: 2")).unwrap();
    let out = Command::new(kubernetes_validate())
        .arg("--strict")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad manifest passed");
}

/// The block scalar `key: |` of a manifest, dedented.
fn block(manifest: &str, key: &str) -> String {
    let start = manifest
        .find(&format!("{key}: |\n"))
        .unwrap_or_else(|| panic!("no {key}"));
    let body = &manifest[start + key.len() + 4..];
    let indent = body.len() - body.trim_start().len();
    body.lines()
        .take_while(|l| l.is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_sidecar_config_map_is_a_valid_config() {
    let gateway = std::fs::read_to_string(root().join("deploy/k8s/gateway.yaml")).unwrap();
    let text = block(&gateway, "sidecar.yaml");
    let config = portcullis::server::Config::parse(&text, "gateway.yaml: sidecar.yaml").unwrap();
    config.validate().unwrap();
    assert_eq!(config.nats.max_staleness_seconds, 60);
    assert_eq!(config.forward_auth.routes.len(), 1);
}

fn nats_check(config: &Path, env: &[(&str, &str)]) {
    let out = Command::new(nats_server::binary())
        .arg("-c")
        .arg(config)
        .arg("-t")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nats_configurations_are_valid_and_the_single_node_one_serves_jetstream() {
    nats_check(&root().join("deploy/nats/nats.conf"), &[]);
    nats_check(&root().join("deploy/nats/nats-cluster.conf"), &[]);
    let nats_yaml = std::fs::read_to_string(root().join("deploy/k8s/nats.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k8s_conf = dir.path().join("k8s-nats.conf");
    std::fs::write(&k8s_conf, block(&nats_yaml, "nats.conf")).unwrap();
    nats_check(&k8s_conf, &[("POD_NAME", "nats-0")]);
    // Started on the single-node file (with its own port and store directory), Portcullis
    // creates its stream and buckets there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let single = std::fs::read_to_string(root().join("deploy/nats/nats.conf"))
        .unwrap()
        .replace("127.0.0.1:4222", &format!("127.0.0.1:{port}"))
        .replace(
            "/var/lib/nats/jetstream",
            dir.path().join("js").to_str().unwrap(),
        );
    let single_conf = dir.path().join("nats.conf");
    std::fs::write(&single_conf, single).unwrap();
    let mut child = Command::new(nats_server::binary())
        .arg("-c")
        .arg(&single_conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = portcullis::fleet::Options {
        url: format!("nats://127.0.0.1:{port}"),
        name: "deploy-test".into(),
        replicas: 1,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let connected = loop {
        match rt.block_on(portcullis::fleet::Fleet::connect(&options)) {
            Ok(f) => break f,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    };
    let info = rt.block_on(connected.stream.get_info()).unwrap();
    assert_eq!(info.config.name, portcullis::fleet::STREAM);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    };
    assert!(probe.status.success());
    let unit = std::fs::read_to_string(root().join("deploy/systemd/portcullis-sidecar.service"))
        .unwrap()
        .replace(
            "/usr/local/bin/portcullis",
            env!("CARGO_BIN_EXE_portcullis"),
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis-sidecar.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}
