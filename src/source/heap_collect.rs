//! Has librdkafka's broker threads give back their free heap memory when the service goes idle.
//!
//! The consumer's broker threads allocate the fetch buffers, and the pipeline frees them. With
//! mimalloc a block freed by another thread waits in its page until the thread that allocated
//! it looks, so after a backlog those pages stay resident: only the broker threads can give
//! them back, and they allocate too rarely when idle to reach mimalloc's own collection. An
//! interceptor on each response they receive (a consumer's broker thread gets one at least
//! every `fetch.wait.max.ms`, also when idle) collects the thread's heap once each time the idle
//! collector asks ([`crate::malloc::collect_if_asked`]: one atomic load otherwise).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::bindings as rd;
use rdkafka::types::RDKafkaRespErr;

const NAME: &CStr = c"plura-heap-collect";

/// Heaps collected by librdkafka threads on the idle collector's request (for tests).
static COLLECTED: AtomicU64 = AtomicU64::new(0);

/// Heaps that librdkafka's threads collected so far.
#[cfg(test)]
pub(crate) fn collected() -> u64 {
    COLLECTED.load(Ordering::Relaxed)
}

/// Adds the interceptor to `conf`, for the client that will be made from it.
///
/// # Safety
/// `conf` must be a valid configuration not yet given to `rd_kafka_new`.
pub(crate) unsafe fn install(conf: *mut rd::rd_kafka_conf_t) -> RDKafkaRespErr {
    // SAFETY: by the caller's contract; `NAME` is a static NUL-terminated string.
    unsafe {
        rd::rd_kafka_conf_interceptor_add_on_new(
            conf,
            NAME.as_ptr(),
            Some(on_new),
            std::ptr::null_mut(),
        )
    }
}

/// Called by `rd_kafka_new`: the only place where a client's own interceptors may be added.
unsafe extern "C" fn on_new(
    rk: *mut rd::rd_kafka_t,
    _conf: *const rd::rd_kafka_conf_t,
    _opaque: *mut c_void,
    _errstr: *mut c_char,
    _errstr_size: usize,
) -> RDKafkaRespErr {
    // SAFETY: `rk` is the client being made, as librdkafka passes it to `on_new`.
    unsafe {
        rd::rd_kafka_interceptor_add_on_response_received(
            rk,
            NAME.as_ptr(),
            Some(on_response_received),
            std::ptr::null_mut(),
        )
    }
}

/// Runs on the broker thread that received a response.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn on_response_received(
    _rk: *mut rd::rd_kafka_t,
    _sockfd: c_int,
    _brokername: *const c_char,
    _brokerid: i32,
    _api_key: i16,
    _api_version: i16,
    _corr_id: i32,
    _size: usize,
    _rtt: i64,
    _err: RDKafkaRespErr,
    _opaque: *mut c_void,
) -> RDKafkaRespErr {
    if crate::malloc::collect_if_asked() {
        COLLECTED.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("Idle: a librdkafka broker thread gave back its free heap memory.");
    }
    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::source::embedded::EmbeddedKafka;
    use crate::source::{consumer_config, BatchConsumer, Trackers};

    /// When the idle collector asks, a broker thread of an idle consumer collects its heap on
    /// the next response it receives.
    #[test]
    fn an_idle_consumers_broker_thread_collects_when_asked() {
        let kafka = EmbeddedKafka::start(&[("heap", 1)]).expect("mock cluster");
        let props = BTreeMap::from([("fetch.wait.max.ms".to_owned(), "100".to_owned())]);
        let cfg = consumer_config(&kafka.bootstrap_servers(), "heap", 100, &props);
        let consumer =
            BatchConsumer::subscribe(&cfg, &["heap".to_owned()], Arc::new(Trackers::default()))
                .expect("consumer");
        let before = super::collected();
        crate::malloc::ask_collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while super::collected() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(super::collected() > before, "no broker thread collected");
        drop(consumer);
    }
}
