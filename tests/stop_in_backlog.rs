//! SIGTERM during a long backlog, through the service (`app::serve`): the service's select on
//! the stop shares a task with the pipeline run, which has messages ready all the time. The
//! stop must still be seen within a bounded number of messages, not once the topic is drained
//! (on Kubernetes that would end in a SIGKILL after the grace period, with no final commit).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use plura_forwarder::receiver::{Receiver, Split};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_during_a_backlog_is_seen_at_once() {
    let kafka = start_kafka();
    let brokers = kafka.bootstrap_servers();
    let recv = Arc::new(Receiver::tcp(Split::OctetCounting).await.unwrap());
    let total = 20_000u64;
    let toml = backlog_config(&brokers, "signal-in-backlog", total, recv.addr()).await;

    // The signal: a task of its own, as `shutdown::on_signal` spawns one.
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = tokio::spawn({
        let (stop, recv) = (stop.clone(), Arc::clone(&recv));
        async move {
            recv.wait_for(1000, Duration::from_secs(60)).await;
            let at_stop = recv.count();
            stop.cancel();
            at_stop
        }
    });
    tokio::time::timeout(
        Duration::from_secs(120),
        plura_forwarder::app::serve(config(&toml), stop),
    )
    .await
    .expect("the service stops in bounded time")
    .expect("service");
    let at_stop = signal.await.unwrap();
    let after = recv.count();
    eprintln!("signal in a backlog: {at_stop} frames at the signal, {after} in all of {total}");
    assert!(at_stop >= 1000, "the signal came before the run got going");
    // Seen within a few hundred messages, plus what the destination's queue and the socket
    // held; the bug drained all 20,000.
    assert!(
        (after as u64) < total / 2,
        "{after} of {total} events forwarded after a signal at {at_stop}: the signal waited for the backlog"
    );
}
