//! `plura-forwarder run` as a process: the admin listener answers `/healthz`, `/readyz` and
//! `/metrics`, and SIGTERM drains, commits and exits 0.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_plura-forwarder");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bare HTTP/1.1 GET; returns (status, body).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split(' ').nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Kills the child if the test fails half-way, so that no forwarder outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_serves_admin_endpoints_and_stops_cleanly_on_sigterm() {
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("forwarder.toml");
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"embedded\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
             [forwarder]\nshutdown_grace_s = 5\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [[syslog]]\nname = \"siem\"\nprotocol = \"udp\"\naddress = \"127.0.0.1:9\"\n"
        ),
    )
    .unwrap();
    let mut guard = KillOnDrop(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&cfg)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let child = &mut guard.0;

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut health = None;
    while Instant::now() < deadline {
        health = get(admin, "/healthz");
        if health.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(health.map(|h| h.0), Some(200), "/healthz answers 200");
    // Ready once the consumer joined its group (the mock cluster takes a few seconds).
    let mut ready = None;
    while Instant::now() < deadline {
        ready = get(admin, "/readyz");
        if ready.as_ref().is_some_and(|r| r.0 == 200) {
            break;
        }
        assert!(ready
            .as_ref()
            .is_some_and(|r| r.0 == 503 && r.1.contains("\"error\"")));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        ready.map(|r| r.0),
        Some(200),
        "/readyz turns 200 after joining"
    );
    let (status, metrics) = get(admin, "/metrics").expect("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("plura_forwarder_events_routed_total{destination=\"siem\"} 0"),
        "{metrics}"
    );
    assert_eq!(get(admin, "/nope").map(|r| r.0), Some(404));

    // SIGTERM: drain, commit, exit 0, in bounded time.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let stop = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if stop.elapsed() > Duration::from_secs(20) {
            panic!("no exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status:?}\n{stderr}");
    assert!(stderr.contains("Stopped."), "{stderr}");
}
