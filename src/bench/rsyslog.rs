//! The rsyslog comparison of performance.md: rsyslogd (imkafka → omfwd) reading the bench topic
//! and forwarding RFC 5424 to the same counting receiver, measured like the product. It runs
//! when Debian's `rsyslog` and `rsyslog-kafka` are installed; otherwise the harness says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::measure::Transport;

/// Where Debian puts rsyslog's binary and its imkafka module.
const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const IMKAFKA: &str = "/usr/lib/x86_64-linux-gnu/rsyslog/imkafka.so";

/// Whether rsyslogd with imkafka is installed here.
pub fn available() -> bool {
    Path::new(RSYSLOGD).exists() && Path::new(IMKAFKA).exists()
}

/// Starts `rsyslogd -n`, quiet, with this configuration: imkafka in a consumer group, a large
/// main queue dequeued in big batches (rsyslog's performance tuning guide), and omfwd to `addr`
/// with octet-counted framing for TCP, in rsyslog's own RFC 5424 template. `fetch.wait.max.ms`
/// and `session.timeout.ms` as for the product (the mock broker's limits); librdkafka 2.0
/// (Debian's) has no `fetch.queue.backoff.ms`.
///
/// # Errors
/// When the configuration cannot be written or rsyslogd cannot start.
pub fn spawn(
    brokers: &str,
    topic: &str,
    group: &str,
    addr: std::net::SocketAddr,
    transport: Transport,
    dir: &Path,
) -> anyhow::Result<Child> {
    let protocol = match transport {
        Transport::Tcp => "protocol=\"tcp\" TCP_Framing=\"octet-counted\"",
        Transport::Udp => "protocol=\"udp\"",
        Transport::Tls => anyhow::bail!("the rsyslog comparison is over TCP or UDP only"),
    };
    let text = format!(
        "global(workDirectory=\"{dir}\" maxMessageSize=\"64k\")\n\
         module(load=\"imkafka\")\n\
         main_queue(queue.type=\"FixedArray\" queue.size=\"200000\" queue.dequeueBatchSize=\"4096\" \
         queue.workerThreads=\"1\")\n\
         input(type=\"imkafka\" topic=\"{topic}\" broker=[\"{brokers}\"] consumergroup=\"{group}\" \
         parseHostname=\"off\" confParam=[\"auto.offset.reset=smallest\", \
         \"fetch.wait.max.ms={wait}\", \"session.timeout.ms=6000\"])\n\
         action(type=\"omfwd\" target=\"{ip}\" port=\"{port}\" {protocol} \
         template=\"RSYSLOG_SyslogProtocol23Format\")\n",
        dir = dir.display(),
        wait = super::measure::FETCH_WAIT_MS,
        ip = addr.ip(),
        port = addr.port(),);
    let conf: PathBuf = dir.join("rsyslog.conf");
    std::fs::write(&conf, text)?;
    Ok(super::measure::quiet(Command::new(RSYSLOGD))
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .spawn()?)
}
