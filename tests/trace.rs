//! The client's trace context crosses the wire: the executor's spans belong to the client's
//! trace (the executor reports the trace id of its own task span in its first log line).

mod common;

use common::ExecutorProcess;
use tracing::Instrument;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_joins_the_clients_trace() {
    let _telemetry = buildr::telemetry::init(0, "buildr-test");
    let executor = ExecutorProcess::start();
    let out = tempfile::tempdir().unwrap();

    let span = tracing::info_span!(target: "buildr::test", "run");
    let client_trace = span.in_scope(buildr::telemetry::current_trace_id);
    assert_ne!(client_trace, "00000000000000000000000000000000");

    let request = span.in_scope(|| executor.request("trace-test", "echo traced"));
    let (outcome, sink) = common::execute(executor.addr, request, out.path())
        .instrument(span)
        .await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.result.exit_code, 0);

    let started = sink
        .logs
        .iter()
        .find(|log| log.message == "task started")
        .expect("the executor logs the start of the task");
    assert_eq!(started.fields["trace_id"], client_trace);
}
