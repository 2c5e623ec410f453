//! The service's consumer: librdkafka's high-level consumer driven through its C API, so that
//! the ready messages come out in batches (`rd_kafka_consume_batch_queue`) instead of one
//! event per message through rdkafka's poll.
//!
//! Why: rdkafka 0.39 polls one event per message, with two clock reads inside librdkafka, one
//! `Instant::now` and one `Arc` allocation in rdkafka for each. Taking 64 at a time cost 0.16–0.35
//! µs less per message in `examples/consume_poll_vs_batch.rs`. rdkafka's consumers cannot do it:
//! they receive rebalances as events, and librdkafka answers a rebalance met inside a batch
//! consume by unassigning everything unless a rebalance *callback* is set, which rdkafka does
//! not expose. So this consumer sets its own callbacks (rebalance, commit, statistics, errors,
//! logs) and keeps [`Trackers`] in step exactly as [`super::SourceContext`] does.
//!
//! The retry consumer, the history reader and the tests' clients stay on rdkafka.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, Message, Timestamp};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::{SourceError, Trackers};
use crate::ack::OffsetStore;

/// What librdkafka's callbacks reach through their opaque pointer. Boxed, so that its address
/// stays put while the client lives.
struct Shared {
    trackers: Arc<Trackers>,
    /// The task waiting for messages, woken when the consumer queue stops being empty.
    waker: Mutex<Option<Waker>>,
}

/// A consumer in a group, subscribed, whose messages are taken in batches.
pub struct BatchConsumer {
    rk: NonNull<rd::rd_kafka_t>,
    queue: NonNull<rd::rd_kafka_queue_t>,
    shared: Box<Shared>,
    closed: std::sync::atomic::AtomicBool,
}

// SAFETY: librdkafka's consumer API is thread-safe (its handle and queue are used from any
// thread); `Shared` is Send + Sync.
unsafe impl Send for BatchConsumer {}
// SAFETY: as above.
unsafe impl Sync for BatchConsumer {}

/// A consumed message, destroyed (given back to librdkafka) when dropped. It borrows the
/// consumer, which must outlive it.
#[repr(transparent)]
pub struct Msg<'c> {
    ptr: NonNull<rd::rd_kafka_message_t>,
    _consumer: PhantomData<&'c BatchConsumer>,
}

// SAFETY: a message is only read after it was handed out, and destroyed once; librdkafka lets
// any thread read and destroy it.
unsafe impl Send for Msg<'_> {}
// SAFETY: reads only.
unsafe impl Sync for Msg<'_> {}

impl Drop for Msg<'_> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `rd_kafka_consume_batch_queue` and is destroyed once.
        unsafe { rd::rd_kafka_message_destroy(self.ptr.as_ptr()) }
    }
}

impl Msg<'_> {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: valid until dropped.
        unsafe { self.ptr.as_ref() }
    }

    /// The consume error this message carries instead of data, if any.
    pub fn error(&self) -> Option<KafkaError> {
        let err = self.raw().err;
        (err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| KafkaError::MessageConsumption(RDKafkaErrorCode::from(err)))
    }

    fn bytes(ptr: *const c_void, len: usize) -> Option<&'static [u8]> {
        // SAFETY (for callers): `ptr` points into the message, `len` bytes, while it lives;
        // the lifetime is narrowed to the message's by the callers' signatures.
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }
}

impl Message for Msg<'_> {
    type Headers = BorrowedHeaders;

    fn key(&self) -> Option<&[u8]> {
        Self::bytes(self.raw().key, self.raw().key_len)
    }

    fn payload(&self) -> Option<&[u8]> {
        Self::bytes(self.raw().payload, self.raw().len)
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        let m = self.ptr.as_mut();
        (!m.payload.is_null())
            .then(|| std::slice::from_raw_parts_mut(m.payload.cast::<u8>(), m.len))
    }

    fn topic(&self) -> &str {
        // SAFETY: a consumed message's topic handle lives as long as the message; its name is
        // a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.raw().rkt)) };
        name.to_str().unwrap_or("")
    }

    fn partition(&self) -> i32 {
        self.raw().partition
    }

    fn offset(&self) -> i64 {
        self.raw().offset
    }

    fn timestamp(&self) -> Timestamp {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a valid message; `kind` is written.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.ptr.as_ptr(), &mut kind) };
        match kind {
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => {
                Timestamp::CreateTime(ms)
            }
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => {
                Timestamp::LogAppendTime(ms)
            }
            _ => Timestamp::NotAvailable,
        }
    }

    fn headers(&self) -> Option<&BorrowedHeaders> {
        let mut headers = std::ptr::null_mut();
        // SAFETY: a valid message; librdkafka parses the headers once and keeps them in the
        // message, so the pointer lives as long as it.
        let err = unsafe { rd::rd_kafka_message_headers(self.ptr.as_ptr(), &mut headers) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return None;
        }
        // SAFETY: `BorrowedHeaders` is rdkafka's zero-sized view whose address is the native
        // headers (its own `BorrowedMessage::headers` makes it this way); pinned by Cargo.lock
        // and checked by `tests/batch_consumer.rs`.
        Some(unsafe { &*headers.cast::<BorrowedHeaders>() })
    }
}

impl BatchConsumer {
    /// Creates the consumer with the callbacks this module needs and subscribes it.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration or the subscription.
    pub fn subscribe(
        config: &ClientConfig,
        topics: &[String],
        trackers: Arc<Trackers>,
    ) -> Result<Arc<BatchConsumer>, SourceError> {
        let create = |source| SourceError::Create {
            what: "consumer",
            source,
        };
        let shared = Box::new(Shared {
            trackers,
            waker: Mutex::new(None),
        });
        let conf = config.create_native_config().map_err(create)?;
        let opaque = std::ptr::from_ref::<Shared>(&shared)
            .cast_mut()
            .cast::<c_void>();
        let mut errstr = [0 as c_char; 512];
        // SAFETY: `conf` is a fresh configuration; the callbacks match librdkafka's
        // signatures; `opaque` points into `shared`, which outlives the client (dropped after
        // `rd_kafka_destroy`). On success librdkafka owns `conf`; on failure we still do.
        let rk = unsafe {
            let c = conf.ptr();
            rd::rd_kafka_conf_set_rebalance_cb(c, Some(on_rebalance));
            rd::rd_kafka_conf_set_offset_commit_cb(c, Some(on_commit));
            rd::rd_kafka_conf_set_stats_cb(c, Some(on_stats));
            rd::rd_kafka_conf_set_error_cb(c, Some(on_error));
            rd::rd_kafka_conf_set_log_cb(c, Some(on_log));
            rd::rd_kafka_conf_set_opaque(c, opaque);
            let err = super::heap_collect::install(c);
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                tracing::warn!(error = ?err, "librdkafka's threads will not give back idle memory.");
            }
            let conf = ManuallyDrop::new(conf);
            let rk = rd::rd_kafka_new(
                rd::rd_kafka_type_t::RD_KAFKA_CONSUMER,
                conf.ptr(),
                errstr.as_mut_ptr(),
                errstr.len(),
            );
            if rk.is_null() {
                drop(ManuallyDrop::into_inner(conf));
            }
            rk
        };
        let Some(rk) = NonNull::new(rk) else {
            // SAFETY: librdkafka wrote a NUL-terminated message into `errstr`.
            let reason = unsafe { CStr::from_ptr(errstr.as_ptr()) };
            return Err(create(KafkaError::ClientCreation(
                reason.to_string_lossy().into_owned(),
            )));
        };
        // SAFETY: a valid consumer handle. Its main queue (errors, statistics, logs) is served
        // through the consumer queue, and the consumer queue wakes the waiting task when it
        // stops being empty.
        let queue = unsafe {
            rd::rd_kafka_poll_set_consumer(rk.as_ptr());
            rd::rd_kafka_queue_get_consumer(rk.as_ptr())
        };
        let consumer = Arc::new(BatchConsumer {
            rk,
            queue: NonNull::new(queue).ok_or_else(|| {
                create(KafkaError::ClientCreation(
                    "librdkafka gave no consumer queue".into(),
                ))
            })?,
            shared,
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        // SAFETY: the queue is valid; `wake` only wakes a waker; the opaque is the boxed
        // `Shared`, unset in `Drop` before the queue goes.
        unsafe { rd::rd_kafka_queue_cb_event_enable(consumer.queue.as_ptr(), Some(wake), opaque) };
        let store = Arc::new(NativeStore(Arc::downgrade(&consumer)));
        consumer.shared.trackers.set_store(store);
        consumer.subscribe_to(topics)?;
        Ok(consumer)
    }

    fn subscribe_to(&self, topics: &[String]) -> Result<(), SourceError> {
        let fail = |source| SourceError::Subscribe {
            topics: topics.to_vec(),
            source,
        };
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            tpl.add_topic_unassigned(t);
        }
        // SAFETY: valid handle and list.
        let err = unsafe { rd::rd_kafka_subscribe(self.rk.as_ptr(), tpl.ptr()) };
        check(err).map_err(|e| fail(KafkaError::Subscription(e.to_string())))
    }

    /// The partitions' trackers.
    pub fn trackers(&self) -> &Arc<Trackers> {
        &self.shared.trackers
    }

    /// Moves up to `max` messages that are ready now into `out`, never waiting; serves the
    /// rebalances, commits and statistics met on the way (on this thread). Returns how many.
    pub fn take_ready<'c>(&'c self, out: &mut Vec<Msg<'c>>, max: usize) -> usize {
        out.reserve(max);
        let spare = out.spare_capacity_mut();
        // SAFETY: `Msg` is a transparent non-null message pointer, so the spare capacity takes
        // `max` of them; librdkafka writes at most `max` non-null pointers and returns how
        // many, which become the vector's, each destroyed once by its `Msg`.
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                spare.as_mut_ptr().cast::<*mut rd::rd_kafka_message_t>(),
                max,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            // -1: the queue is gone (the client is closing); nothing was written.
            return 0;
        };
        // SAFETY: the first `n` spare slots were just initialised.
        unsafe { out.set_len(out.len() + n) };
        n
    }

    /// [`BatchConsumer::take_ready`], or `Pending` with `cx`'s waker registered, to be woken
    /// when messages (or a rebalance) arrive. Cancel-safe: the last waker registered wins.
    pub fn poll_ready<'c>(
        &'c self,
        cx: &mut Context<'_>,
        out: &mut Vec<Msg<'c>>,
        max: usize,
    ) -> Poll<usize> {
        let n = self.take_ready(out, max);
        if n > 0 {
            return Poll::Ready(n);
        }
        // Registered before the second look: librdkafka wakes on the queue's empty →
        // non-empty step, which a message arriving after that look makes.
        *self.shared.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        match self.take_ready(out, max) {
            0 => Poll::Pending,
            n => Poll::Ready(n),
        }
    }

    /// Waits for the next ready messages and moves up to `max` of them into `out`.
    pub async fn ready<'c>(&'c self, out: &mut Vec<Msg<'c>>, max: usize) -> usize {
        std::future::poll_fn(|cx| self.poll_ready(cx, out, max)).await
    }

    /// The partitions assigned now.
    ///
    /// # Errors
    /// librdkafka's, when the assignment cannot be read.
    pub fn assignment(&self) -> KafkaResult<TopicPartitionList> {
        let mut native = std::ptr::null_mut();
        // SAFETY: valid handle; on success `native` is a list we own and destroy.
        let err = unsafe { rd::rd_kafka_assignment(self.rk.as_ptr(), &mut native) };
        check(err).map_err(KafkaError::MetadataFetch)?;
        // SAFETY: a valid list, destroyed after the copy.
        let tpl = unsafe { copy_list(native) };
        // SAFETY: ours, once.
        unsafe { rd::rd_kafka_topic_partition_list_destroy(native) };
        Ok(tpl)
    }

    /// Stops fetching `tpl`'s partitions; what was prefetched for them is dropped.
    ///
    /// # Errors
    /// librdkafka's.
    pub fn pause(&self, tpl: &TopicPartitionList) -> KafkaResult<()> {
        // SAFETY: valid handle and list.
        let err = unsafe { rd::rd_kafka_pause_partitions(self.rk.as_ptr(), tpl.ptr()) };
        check(err).map_err(|e| KafkaError::PauseResume(e.to_string()))
    }

    /// Fetches `tpl`'s partitions again, from the application's position.
    ///
    /// # Errors
    /// librdkafka's.
    pub fn resume(&self, tpl: &TopicPartitionList) -> KafkaResult<()> {
        // SAFETY: valid handle and list.
        let err = unsafe { rd::rd_kafka_resume_partitions(self.rk.as_ptr(), tpl.ptr()) };
        check(err).map_err(|e| KafkaError::PauseResume(e.to_string()))
    }

    /// Commits the stored offsets now, waiting for the broker.
    ///
    /// # Errors
    /// librdkafka's (`NoOffset` when nothing was stored since the last commit).
    pub fn commit_sync(&self) -> KafkaResult<()> {
        // SAFETY: valid handle.
        unsafe { commit_sync(self.rk.as_ptr()) }
    }

    /// Leaves the group: the assignment is revoked through the rebalance callback (which
    /// commits what is finished) and the consumer stops. Blocks; idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        // SAFETY: valid handle; serves the remaining callbacks on this thread.
        let err = unsafe { rd::rd_kafka_consumer_close(self.rk.as_ptr()) };
        if let Err(e) = check(err) {
            tracing::warn!(error = %e, "Closing the consumer failed.");
        }
    }
}

impl Drop for BatchConsumer {
    fn drop(&mut self) {
        // SAFETY: no message borrows the consumer any more (their lifetimes end before its);
        // the wake callback is unset before the queue goes, the client after the queue.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, std::ptr::null_mut());
        }
        self.close();
        // SAFETY: as above; destroyed once.
        unsafe {
            rd::rd_kafka_queue_destroy(self.queue.as_ptr());
            rd::rd_kafka_destroy(self.rk.as_ptr());
        }
    }
}

/// `Ok` for no error, else librdkafka's code.
fn check(err: RDKafkaRespErr) -> Result<(), RDKafkaErrorCode> {
    if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(RDKafkaErrorCode::from(err))
    }
}

/// Commits the stored offsets and waits.
///
/// # Safety
/// `rk` is a valid consumer handle.
unsafe fn commit_sync(rk: *mut rd::rd_kafka_t) -> KafkaResult<()> {
    check(rd::rd_kafka_commit(rk, std::ptr::null(), 0)).map_err(KafkaError::ConsumerCommit)
}

/// A copy of a native list as rdkafka's (which cannot wrap a list it does not own).
///
/// # Safety
/// `native` is a valid list.
unsafe fn copy_list(native: *const rd::rd_kafka_topic_partition_list_t) -> TopicPartitionList {
    let list = &*native;
    let mut tpl = TopicPartitionList::with_capacity(usize::try_from(list.cnt).unwrap_or(0));
    if list.cnt > 0 && !list.elems.is_null() {
        let elems = std::slice::from_raw_parts(list.elems, list.cnt as usize);
        for e in elems {
            let topic = CStr::from_ptr(e.topic).to_string_lossy();
            let _ = tpl.add_partition_offset(&topic, e.partition, Offset::from_raw(e.offset));
        }
    }
    tpl
}

/// Whether the group uses the cooperative protocol (incremental assign and unassign).
///
/// # Safety
/// `rk` is a valid consumer handle.
unsafe fn cooperative(rk: *mut rd::rd_kafka_t) -> bool {
    let p = rd::rd_kafka_rebalance_protocol(rk);
    !p.is_null() && CStr::from_ptr(p).to_bytes() == b"COOPERATIVE"
}

/// Logs and frees an incremental (un)assign's error.
///
/// # Safety
/// `e` is null or an error librdkafka returned to us.
unsafe fn log_error(what: &str, e: *mut rd::rd_kafka_error_t) {
    if e.is_null() {
        return;
    }
    let reason = CStr::from_ptr(rd::rd_kafka_error_string(e)).to_string_lossy();
    tracing::warn!(%reason, "{what} failed.");
    rd::rd_kafka_error_destroy(e);
}

/// librdkafka's rebalance callback, on the thread that consumes (or closes): the same steps as
/// [`super::SourceContext`]'s, then the assignment change itself.
unsafe extern "C" fn on_rebalance(
    rk: *mut rd::rd_kafka_t,
    err: RDKafkaRespErr,
    partitions: *mut rd::rd_kafka_topic_partition_list_t,
    opaque: *mut c_void,
) {
    let shared = &*(opaque as *const Shared);
    let tpl = copy_list(partitions);
    let coop = cooperative(rk);
    match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
            shared.trackers.on_assign(&tpl);
            if coop {
                log_error(
                    "Incremental assign",
                    rd::rd_kafka_incremental_assign(rk, partitions),
                );
            } else if let Err(e) = check(rd::rd_kafka_assign(rk, partitions)) {
                tracing::warn!(error = %e, "Assign failed.");
            }
        }
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
            let lost = rd::rd_kafka_assignment_lost(rk) != 0;
            shared.trackers.on_revoke(&tpl, lost, || commit_sync(rk));
            if coop {
                log_error(
                    "Incremental unassign",
                    rd::rd_kafka_incremental_unassign(rk, partitions),
                );
            } else {
                rd::rd_kafka_assign(rk, std::ptr::null());
            }
        }
        other => {
            tracing::warn!(error = %RDKafkaErrorCode::from(other), "Rebalance error.");
            rd::rd_kafka_assign(rk, std::ptr::null());
        }
    }
}

/// librdkafka's commit callback (automatic commits).
unsafe extern "C" fn on_commit(
    _rk: *mut rd::rd_kafka_t,
    err: RDKafkaRespErr,
    _offsets: *mut rd::rd_kafka_topic_partition_list_t,
    _opaque: *mut c_void,
) {
    super::consumer::committed(check(err).map_err(KafkaError::ConsumerCommit));
}

/// librdkafka's statistics, every `statistics.interval.ms`: the lag of each owned partition.
unsafe extern "C" fn on_stats(
    _rk: *mut rd::rd_kafka_t,
    json: *mut c_char,
    len: usize,
    opaque: *mut c_void,
) -> c_int {
    let shared = &*(opaque as *const Shared);
    let bytes = std::slice::from_raw_parts(json.cast::<u8>(), len);
    match serde_json::from_slice::<rdkafka::Statistics>(bytes) {
        Ok(stats) => shared.trackers.record_lag(&stats),
        Err(e) => tracing::debug!(error = %e, "Unreadable librdkafka statistics."),
    }
    0 // librdkafka frees the JSON
}

/// librdkafka's error callback (connection trouble, mostly; librdkafka retries).
unsafe extern "C" fn on_error(
    _rk: *mut rd::rd_kafka_t,
    err: c_int,
    reason: *const c_char,
    _opaque: *mut c_void,
) {
    let reason = CStr::from_ptr(reason).to_string_lossy();
    tracing::warn!(target: "librdkafka", code = err, reason = %reason.trim(), "Kafka client error.");
}

/// librdkafka's log lines, at their syslog level, from its own threads.
unsafe extern "C" fn on_log(
    _rk: *const rd::rd_kafka_t,
    level: c_int,
    fac: *const c_char,
    buf: *const c_char,
) {
    let fac = CStr::from_ptr(fac).to_string_lossy();
    let line = CStr::from_ptr(buf).to_string_lossy();
    super::consumer::librdkafka_log(level, fac.trim(), line.trim());
}

/// The consumer queue stopped being empty: wake the task waiting in [`BatchConsumer::ready`].
/// Called by librdkafka with the queue locked: only wakes.
unsafe extern "C" fn wake(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    let shared = &*(opaque as *const Shared);
    let waker = shared
        .waker
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(w) = waker {
        w.wake();
    }
}

/// Stores watermarks into the consumer's offset store (librdkafka keeps `offset + 1`).
struct NativeStore(Weak<BatchConsumer>);

impl OffsetStore for NativeStore {
    fn store(&self, topic: &str, partition: i32, offset: i64) {
        let Some(consumer) = self.0.upgrade() else {
            return;
        };
        let Ok(name) = CString::new(topic) else {
            return;
        };
        // SAFETY: valid handle; the topic handle is looked up (or made) and released once.
        let err = unsafe {
            let rkt =
                rd::rd_kafka_topic_new(consumer.rk.as_ptr(), name.as_ptr(), std::ptr::null_mut());
            if rkt.is_null() {
                return;
            }
            let err = rd::rd_kafka_offset_store(rkt, partition, offset);
            rd::rd_kafka_topic_destroy(rkt);
            err
        };
        if let Err(e) = check(err) {
            // A revoked partition refuses stores; its events are redelivered to the new owner.
            tracing::debug!(topic, partition, offset, error = %e, "Offset store refused.");
        }
    }
}
