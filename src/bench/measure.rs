//! One measured run of one scenario: receivers, a forwarder child process, `/proc` readings.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::receiver::{Receiver, Split};

/// How a receiver listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Octet-counted TCP.
    Tcp,
    /// One datagram per frame.
    Udp,
    /// RFC 5425: octet-counted over TLS, the server's certificate issued by a CA made for the
    /// run.
    Tls,
}

enum Kind {
    /// The minimal forwarder over this transport.
    Baseline(Transport),
    /// The product with these `[[syslog]]` tables (`{addr0}`… filled in).
    Product(&'static str),
    /// This many product processes in one consumer group (scale-out), started together so
    /// that the first assignment (after the broker's initial rebalance delay, 3 s) splits the
    /// partitions between them.
    Replicas(&'static str, usize),
    /// rsyslogd (imkafka → omfwd RFC 5424) over this transport.
    Rsyslog(Transport),
}

/// A named scenario.
pub struct Scenario {
    /// Its name in the table.
    pub name: &'static str,
    kind: Kind,
    receivers: &'static [Transport],
}

const TCP_5424: &str =
    "[[syslog]]\nname = \"d0\"\nprotocol = \"tcp\"\nformat = \"rfc5424\"\naddress = \"{addr0}\"\n";
const TCP_CEF: &str =
    "[[syslog]]\nname = \"d0\"\nprotocol = \"tcp\"\nformat = \"cef\"\naddress = \"{addr0}\"\n";
const TLS_5425: &str =
    "[[syslog]]\nname = \"d0\"\nprotocol = \"tls\"\nformat = \"rfc5425\"\naddress = \"{addr0}\"\n\
[syslog.tls]\nca_file = \"{ca_file}\"\nserver_name = \"127.0.0.1\"\n";
const UDP_5424: &str = "[[syslog]]\nname = \"d0\"\nprotocol = \"udp\"\nformat = \"rfc5424\"\nmax_message_bytes = 8192\naddress = \"{addr0}\"\n";
const FANOUT_4: &str = "[[syslog]]\nname = \"d0\"\nprotocol = \"tcp\"\nformat = \"rfc5424\"\naddress = \"{addr0}\"\n\
[[syslog]]\nname = \"d1\"\nprotocol = \"tcp\"\nformat = \"rfc3164\"\naddress = \"{addr1}\"\n\
[[syslog]]\nname = \"d2\"\nprotocol = \"tcp\"\nformat = \"cef\"\naddress = \"{addr2}\"\n\
[[syslog]]\nname = \"d3\"\nprotocol = \"tcp\"\nformat = \"rfc5424\"\nsd_id = \"plura@32473\"\nmsgid = \"category\"\naddress = \"{addr3}\"\n";

impl Scenario {
    /// Every scenario, in table order.
    pub fn all() -> Vec<Scenario> {
        use Transport::{Tcp, Tls, Udp};
        let all = vec![
            Scenario {
                name: "baseline-tcp",
                kind: Kind::Baseline(Tcp),
                receivers: &[Tcp],
            },
            Scenario {
                name: "product-tcp-rfc5424",
                kind: Kind::Product(TCP_5424),
                receivers: &[Tcp],
            },
            Scenario {
                name: "product-tcp-cef",
                kind: Kind::Product(TCP_CEF),
                receivers: &[Tcp],
            },
            Scenario {
                name: "product-tls-rfc5425",
                kind: Kind::Product(TLS_5425),
                receivers: &[Tls],
            },
            Scenario {
                name: "product-fanout-4",
                kind: Kind::Product(FANOUT_4),
                receivers: &[Tcp, Tcp, Tcp, Tcp],
            },
            Scenario {
                name: "product-tcp-2-replicas",
                kind: Kind::Replicas(TCP_5424, 2),
                receivers: &[Tcp],
            },
            Scenario {
                name: "rsyslog-tcp-rfc5424",
                kind: Kind::Rsyslog(Tcp),
                receivers: &[Tcp],
            },
            Scenario {
                name: "baseline-udp",
                kind: Kind::Baseline(Udp),
                receivers: &[Udp],
            },
            Scenario {
                name: "product-udp-rfc5424",
                kind: Kind::Product(UDP_5424),
                receivers: &[Udp],
            },
            Scenario {
                name: "rsyslog-udp-rfc5424",
                kind: Kind::Rsyslog(Udp),
                receivers: &[Udp],
            },
        ];
        all.into_iter()
            .filter(|s| !matches!(s.kind, Kind::Rsyslog(_)) || super::rsyslog::available())
            .collect()
    }
}

/// The readings of one run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Frames per second over the receiving window, per destination.
    pub events_per_s: f64,
    /// Child CPU time (user + system) per event over the window, all destinations (and
    /// replicas) together.
    pub cpu_us_per_event: f64,
    /// Child peak resident memory (VmHWM; replicas summed).
    pub peak_rss_mb: f64,
    /// Frames received, all destinations.
    pub received: usize,
    /// How busy the whole machine was over the window (0–1): what a scenario that does not
    /// scale ran into.
    pub machine_busy: f64,
}

impl Sample {
    /// One line for progress output.
    pub fn line(&self) -> String {
        format!(
            "{:>10.0} ev/s  {:>6.2} µs/ev  {:>5.0} MB  received {}  machine {:.0} % busy",
            self.events_per_s,
            self.cpu_us_per_event,
            self.peak_rss_mb,
            self.received,
            self.machine_busy * 100.0
        )
    }
}

/// The CA of a TLS receiver, in the run's directory.
const CA_FILE: &str = "receiver-ca.pem";

/// Runs one scenario once.
///
/// # Errors
/// When a receiver or the child cannot start, or nothing arrives within two minutes.
pub async fn one(
    s: &Scenario,
    brokers: &str,
    topic: &str,
    group: &str,
    n: u64,
) -> anyhow::Result<Sample> {
    let dir = tempfile_dir()?;
    let mut receivers = Vec::new();
    for t in s.receivers {
        let rx = match t {
            Transport::Tcp => Receiver::tcp(Split::OctetCounting).await?,
            Transport::Udp => Receiver::udp().await?,
            Transport::Tls => {
                let (ca_pem, server) = crate::receiver::loopback_tls()?;
                std::fs::write(dir.join(CA_FILE), ca_pem)?;
                Receiver::tls(Split::OctetCounting, server).await?
            }
        };
        // Counted, not kept: the harness shares the machine with what it measures.
        receivers.push(rx.counting());
    }
    let mut children = spawn(s, brokers, topic, group, &receivers, &dir)?;
    let cpu = |children: &[Child]| children.iter().map(|c| cpu_ticks(c.id())).sum::<u64>();
    let expected = n as usize * receivers.len();
    let total = || receivers.iter().map(Receiver::count).sum::<usize>();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first: Option<(Instant, u64, usize, (u64, u64))> = None;
    // The last look that saw nothing: the window's start when a small load arrives whole
    // between two looks.
    let mut empty = (Instant::now(), cpu(&children), machine_ticks());
    let (mut last_count, mut last_progress, mut last_ticks) = (0, Instant::now(), (0, 0));
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let count = total();
        let now = Instant::now();
        if count == 0 {
            empty = (now, cpu(&children), machine_ticks());
        }
        if count > 0 && first.is_none() {
            first = Some((now, cpu(&children), count, machine_ticks()));
        }
        if count != last_count {
            (last_count, last_progress, last_ticks) = (count, now, machine_ticks());
        }
        // Generous: a replica that joined late waits out a rebalance (session timeout 6 s)
        // before it gets its partitions. The window ends at the last progress anyway.
        let stalled = first.is_some() && now - last_progress > Duration::from_secs(10);
        if count >= expected || stalled || now > deadline {
            break;
        }
    }
    let end = last_progress;
    let cpu_end = cpu(&children);
    let rss = children.iter().map(|c| peak_rss_mb(c.id())).sum();
    for c in &mut children {
        stop(c);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let Some((mut t0, mut cpu0, mut c0, mut ticks0)) = first else {
        anyhow::bail!("{}: nothing arrived within two minutes", s.name);
    };
    let received = total();
    if received == c0 {
        // Everything came between two looks (a load of a few ms): from the last empty look.
        (t0, cpu0, c0, ticks0) = (empty.0, empty.1, 0, empty.2);
    }
    let window = (end - t0).as_secs_f64().max(1e-3);
    let per_dest = (received - c0) as f64 / receivers.len() as f64;
    let ticks_per_s = clock_ticks_per_s();
    let cpu_s = (cpu_end.saturating_sub(cpu0)) as f64 / ticks_per_s;
    Ok(Sample {
        events_per_s: per_dest / window,
        cpu_us_per_event: cpu_s * 1e6 / per_dest.max(1.0),
        peak_rss_mb: rss,
        received,
        machine_busy: busy_share(ticks0, last_ticks),
    })
}

fn spawn(
    s: &Scenario,
    brokers: &str,
    topic: &str,
    group: &str,
    receivers: &[Receiver],
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Child>> {
    let product = |dests: &str, replica: usize| -> anyhow::Result<Child> {
        let mut dests = dests.replace("{ca_file}", &dir.join(CA_FILE).display().to_string());
        for (i, r) in receivers.iter().enumerate() {
            dests = dests.replace(&format!("{{addr{i}}}"), &r.addr().to_string());
        }
        let dir = dir.join(replica.to_string());
        std::fs::create_dir_all(&dir)?;
        spawn_product(&dests, brokers, topic, group, &dir, free_port()?, true)
    };
    match s.kind {
        Kind::Baseline(t) => {
            let t = if t == Transport::Udp { "udp" } else { "tcp" };
            let addr = receivers[0].addr();
            let worker = format!("{brokers},{group},{topic},{addr},{t}");
            Ok(vec![quiet(Command::new(std::env::current_exe()?))
                .args(["bench", "--baseline-worker", &worker])
                .spawn()?])
        }
        Kind::Product(dests) => Ok(vec![product(dests, 0)?]),
        Kind::Replicas(dests, n) => (0..n).map(|i| product(dests, i)).collect(),
        Kind::Rsyslog(t) => Ok(vec![super::rsyslog::spawn(
            brokers,
            topic,
            group,
            receivers[0].addr(),
            t,
            dir,
        )?]),
    }
}

/// A child with no standard streams and errors-only logging: the harness reads `/proc`. With
/// `PLURA_BENCH_CHILD_LOG` set (a `RUST_LOG` filter such as `warn`), the children log to the
/// harness's standard error at that level instead: to see why a run lost or slowed.
pub(super) fn quiet(mut cmd: Command) -> Command {
    let log = std::env::var("PLURA_BENCH_CHILD_LOG").ok();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if log.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .env("RUST_LOG", log.as_deref().unwrap_or("error"));
    cmd
}

/// `fetch.wait.max.ms` of the forwarders under test. librdkafka's mock broker answers a Fetch
/// that finds no data only after this wait, even when data arrives meanwhile (a real broker
/// answers at once), so the default of 500 ms made latency under live load a measure of the
/// mock (p50 0.5 s, p99 1 s) instead of the forwarder. `session.timeout.ms` is 6 s, so that a
/// rebalance on the mock (which waits for it) stays short.
pub(super) const FETCH_WAIT_MS: u32 = 2;

/// Starts `plura-forwarder run` with `dests` (its `[[syslog]]` tables) on `topic`; with
/// `short_fetch_wait`, `fetch.wait.max.ms` is [`FETCH_WAIT_MS`], else librdkafka's default.
///
/// # Errors
/// When the config cannot be written or the process cannot start.
pub(super) fn spawn_product(
    dests: &str,
    brokers: &str,
    topic: &str,
    group: &str,
    dir: &std::path::Path,
    admin: u16,
    short_fetch_wait: bool,
) -> anyhow::Result<Child> {
    let fetch_wait = if short_fetch_wait {
        format!("\"fetch.wait.max.ms\" = \"{FETCH_WAIT_MS}\"\n")
    } else {
        String::new()
    };
    let toml = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\ntopics = [\"{topic}\"]\n\
         [kafka.properties]\n{fetch_wait}\"session.timeout.ms\" = \"6000\"\n\
         [forwarder]\nhostname = \"bench\"\nshutdown_grace_s = 2\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n[compliance]\nmapping_file = \"{}\"\n{dests}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/compliance.toml")
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, toml)?;
    Ok(quiet(Command::new(std::env::current_exe()?))
        .arg("run")
        .arg("-c")
        .arg(path)
        .spawn()?)
}

/// A bare GET to the child's admin port; the whole response.
pub(super) fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A product process forwarding `topic` to one TCP RFC 5424 destination at `addr`, once its
/// `/readyz` answers 200 (`short_fetch_wait` as in [`spawn_product`]). Returns it with its
/// admin port and its directory (to remove).
///
/// # Errors
/// When the child cannot start or does not get ready within 30 s.
pub(super) async fn ready_product(
    addr: std::net::SocketAddr,
    brokers: &str,
    topic: &str,
    group: &str,
    tag: &str,
    short_fetch_wait: bool,
) -> anyhow::Result<(Child, u16, std::path::PathBuf)> {
    let admin = free_port()?;
    let dir = std::env::temp_dir().join(format!("plura-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let dest = TCP_5424.replace("{addr0}", &addr.to_string());
    let mut child = spawn_product(&dest, brokers, topic, group, &dir, admin, short_fetch_wait)?;
    if !wait_ready(admin).await {
        stop(&mut child);
        anyhow::bail!("the forwarder did not get ready within 30 s");
    }
    Ok((child, admin, dir))
}

/// Waits up to 30 s for the child's `/readyz` to answer 200.
async fn wait_ready(admin: u16) -> bool {
    for _ in 0..600 {
        if http_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub(super) fn stop(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "plura-bench-{}-{}",
        std::process::id(),
        crate::pipeline::now_us()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub(super) fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// utime + stime of a process, in clock ticks (0 when unreadable).
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// (busy, total) clock ticks of the whole machine since boot, from `/proc/stat`.
pub(super) fn machine_ticks() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// How busy the whole machine was (0–1) between two [`machine_ticks`] readings.
pub(super) fn busy_share(from: (u64, u64), to: (u64, u64)) -> f64 {
    to.0.saturating_sub(from.0) as f64 / to.1.saturating_sub(from.1).max(1) as f64
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn peak_rss_mb(pid: u32) -> f64 {
    rss_mb(pid, "VmHWM:")
}

/// A memory line of `/proc/{pid}/status` (`VmRSS:`, `VmHWM:`), in MiB; NaN when unreadable.
pub(crate) fn rss_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
