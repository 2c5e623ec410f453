//! The command line as a user runs it: `render` against every conformance vector of
//! formats.md, bad input lines, and `check` on good and bad config files.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_plura-forwarder");
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/spec/format-vectors.jsonl"
);

fn run(args: &[String], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plura-forwarder");
    // A refused setting exits before reading: a broken pipe here is not a failure.
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    child.wait_with_output().expect("wait")
}

/// A vector's settings as `render` flags (`--key-with-dashes VALUE`).
fn flags(settings: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut out = vec!["render".to_owned()];
    for (k, v) in settings {
        // formats.md §4 nests `structured_data = { sd_id = … }`; the flag is `--sd-id`.
        if let Some(sd_id) = v.get("sd_id").filter(|_| k == "structured_data") {
            out.push("--sd-id".to_owned());
            out.push(sd_id.as_str().unwrap().to_owned());
            continue;
        }
        out.push(format!("--{}", k.replace('_', "-")));
        out.push(match v {
            Value::String(s) => s.clone(),
            // A null host name is the NILVALUE, spelled `-` on the command line.
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        });
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn render_reproduces_every_conformance_vector() {
    let text = std::fs::read_to_string(VECTORS).expect("the shared conformance vectors");
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("vector JSON");
        let id = v["id"].as_str().unwrap();
        let args = flags(v["settings"].as_object().unwrap());
        let input = format!("{}\n", v["input"]);
        let out = run(&args, input.as_bytes());
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(err) = v.get("expected_error").and_then(Value::as_str) {
            assert_eq!(
                out.status.code(),
                Some(2),
                "{id}: a refused setting exits 2"
            );
            assert!(
                stderr.contains(err),
                "{id}: stderr {stderr:?} lacks {err:?}"
            );
        } else if v.get("expected_outcome").and_then(Value::as_str) == Some("dropped") {
            assert_eq!(
                out.status.code(),
                Some(1),
                "{id}: a dropped message is a failed line"
            );
            assert!(
                out.stdout.is_empty(),
                "{id}: nothing is written for a dropped message"
            );
        } else {
            assert!(
                out.status.success(),
                "{id}: exit {:?}, stderr {stderr}",
                out.status
            );
            let want = v["expected_hex"].as_str().unwrap();
            assert_eq!(
                hex(&out.stdout),
                want,
                "{id}: got {:?}, want {:?}",
                String::from_utf8_lossy(&out.stdout),
                v["expected"]
            );
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} vectors found");
}

#[test]
fn render_reports_bad_lines_by_number_and_goes_on() {
    let good = r#"{"logType":"detect","category":"web","serviceName":"웹"}"#;
    let input = format!("{good}\n{{broken\n\n{good}\n");
    let args: Vec<String> = [
        "render",
        "--format",
        "rfc3164",
        "--protocol",
        "udp",
        "--now",
        "2022-06-16T12:44:15+09:00",
        "--tz",
        "+09:00",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let out = run(&args, input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2:") && stderr.contains("not_json"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.matches("Jun 16 12:44:15").count(),
        2,
        "both good lines rendered: {stdout}"
    );
}

#[test]
fn render_refuses_an_unknown_flag_and_a_bad_value() {
    let out = run(&["render".into(), "--colour".into(), "red".into()], b"");
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["render".into(), "--tag-colon".into(), "yes".into()], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tag-colon"));
}

#[test]
fn check_accepts_the_example_config() {
    let out = run(
        &["check".into(), "-c".into(), "config/forwarder.toml".into()],
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("soc-siem"), "{stdout}");
}

#[test]
fn check_names_table_key_and_reason_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[syslog]]\nname = \"soc-b\"\naddress = \"10.0.0.5\"\n\n[[syslog]]\nname = \"x\"\naddress = \"127.0.0.1:514\"\nfacility = 24\n",
    )
    .unwrap();
    let out = run(
        &["check".into(), "-c".into(), path.display().to_string()],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"syslog[0] "soc-b": address "10.0.0.5": missing port"#),
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"syslog[1] "x""#) && stderr.contains("facility"),
        "all errors at once: {stderr}"
    );
}
