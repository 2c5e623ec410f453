//! The Kubernetes and Prometheus material in `deploy/` checked without a cluster: every metric
//! it names exists in the code, the shipped config loads, the grace periods agree, the kustomize
//! overlays render and validate against the Kubernetes schemas, and the alert rules parse and
//! fire. Tools that are missing (kubectl, kubernetes-validate, promtool) are skipped with a
//! printed reason; `.ci/run` installs them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use plura_forwarder::metrics;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn deploy_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(ROOT).join("deploy"), &mut out);
    out
}

fn has(tool: &str) -> bool {
    Command::new(tool).arg("--help").output().is_ok()
}

/// Every `plura_forwarder_*` name in a text, with histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("plura_forwarder_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                name = base;
            }
        }
        out.insert(name.to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_metric_in_alerts_and_dashboard_exists_in_the_code() {
    let known: BTreeSet<&str> = metrics::ALL.iter().copied().collect();
    let mut used = BTreeSet::new();
    for f in deploy_files() {
        if matches!(
            f.extension().and_then(|e| e.to_str()),
            Some("yaml" | "json")
        ) {
            let text = std::fs::read_to_string(&f).unwrap();
            for name in metric_names(&text) {
                assert!(
                    known.contains(name.as_str()),
                    "{}: unknown metric {name}",
                    f.display()
                );
                used.insert(name);
            }
        }
    }
    for must in [
        "destination_up",
        "events_parked_total",
        "dead_letter_total",
        "consumer_lag",
        "tickets_total",
    ] {
        assert!(
            used.contains(&format!("plura_forwarder_{must}")),
            "no alert or panel uses {must}"
        );
    }
}

#[test]
fn the_shipped_kubernetes_config_loads_and_the_grace_periods_agree() {
    let toml =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/kustomize/base/forwarder.toml"))
            .unwrap();
    let cfg = plura_forwarder::config::from_toml_str(&toml).expect("deploy config is valid");
    let deployment =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/kustomize/base/deployment.yaml"))
            .unwrap();
    let grace: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > cfg.forwarder.shutdown_grace_s,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace_s {}",
        cfg.forwarder.shutdown_grace_s
    );
    assert!(
        cfg.admin.listen.starts_with("0.0.0.0:"),
        "the pod's admin port must be reachable"
    );
}

#[test]
fn overlays_render_and_validate_against_the_kubernetes_schemas() {
    if !has("kubectl") {
        eprintln!("skipped: kubectl (with kustomize) is not installed");
        return;
    }
    let validate = has("kubernetes-validate");
    if !validate {
        eprintln!("schema validation skipped: kubernetes-validate is not installed (pip install kubernetes-validate)");
    }
    let dir = tempfile::tempdir().unwrap();
    for (overlay, kinds) in [
        (
            "production",
            &[
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "ServiceMonitor",
                "PrometheusRule",
                "ScaledObject",
                "ConfigMap",
            ][..],
        ),
        (
            "hpa",
            &["Deployment", "HorizontalPodAutoscaler", "PrometheusRule"][..],
        ),
        ("dev", &["Deployment", "Service"][..]),
    ] {
        let out = Command::new("kubectl")
            .args([
                "kustomize",
                &format!("{ROOT}/deploy/kustomize/overlays/{overlay}"),
            ])
            .output()
            .expect("kubectl kustomize");
        assert!(
            out.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for kind in kinds {
            assert!(
                text.contains(&format!("\nkind: {kind}\n")),
                "{overlay}: no {kind}"
            );
        }
        if validate {
            let file = dir.path().join(format!("{overlay}.yaml"));
            std::fs::write(&file, &text).unwrap();
            let out = Command::new("kubernetes-validate")
                .args(["--strict", "--quiet"])
                .arg(&file)
                .output()
                .expect("kubernetes-validate");
            let report = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && !report.contains("ERROR"),
                "{overlay}:\n{report}"
            );
        }
    }
}

/// The PrometheusRule's `spec` is a plain Prometheus rule file.
fn rule_file() -> String {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/kustomize/base/prometheusrule.yaml"))
            .unwrap();
    let spec = text.split_once("\nspec:\n").expect("spec").1;
    spec.lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn alert_rules_parse_and_fire() {
    if !has("promtool") {
        eprintln!("skipped: promtool is not installed (Debian package prometheus)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rule_file()).unwrap();
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(dir.path().join("rules.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A destination down for 6 minutes fires; one that is up does not.
    let test = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'plura_forwarder_destination_up{destination="soc-siem",pod="a"}'
        values: '0x10'
      - series: 'plura_forwarder_destination_up{destination="acme",pod="a"}'
        values: '1x10'
      - series: 'plura_forwarder_dead_letter_total{reason="not_json",pod="a"}'
        values: '0 0 3 3 3'
    alert_rule_test:
      - eval_time: 6m
        alertname: PluraForwarderDestinationDown
        exp_alerts:
          - exp_labels: {severity: critical, destination: soc-siem}
            exp_annotations:
              summary: "Syslog destination soc-siem is down"
              description: "No replica has been connected to soc-siem for 5 minutes. Its events are parked in its retry topic and sent when it is back; check the SIEM and /api/destinations."
      - eval_time: 3m
        alertname: PluraForwarderDeadLetters
        exp_alerts:
          - exp_labels: {severity: warning, reason: not_json}
            exp_annotations:
              summary: "Events written to the dead-letter topic (not_json)"
              description: "Invalid or undeliverable events; inspect the dead-letter topic (headers reason, source_topic, source_partition, source_offset)."
"#;
    std::fs::write(dir.path().join("test.yaml"), test).unwrap();
    let out = Command::new("promtool")
        .current_dir(dir.path())
        .args(["test", "rules", "test.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dashboard_is_valid_json_with_prometheus_targets() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/grafana/plura-forwarder.json"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = v["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty()
                && targets.iter().all(|t| t["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("plura_forwarder_")))
        );
    }
}
