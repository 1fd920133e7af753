//! OTLP export, end to end: a real `buildr run` on the local backend, pointed at an in-process
//! OTLP/gRPC collector by the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, delivers the spans of both
//! processes (the client and the executor it starts), all in one trace.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use tokio_stream::wrappers::TcpListenerStream;

/// A collector that keeps every export request it receives.
#[derive(Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free loopback port until the test's runtime ends.
    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }

    /// Every span received so far, flattened.
    fn spans(&self) -> Vec<ExportedSpan> {
        let requests = self.requests.lock().unwrap();
        let mut spans = Vec::new();
        for resource_spans in requests.iter().flat_map(|r| &r.resource_spans) {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    any_value::Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                });
            }
        }
        spans
    }
}

#[derive(Debug)]
struct ExportedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// A span as (service, name).
type SpanKey<'a> = (&'a str, &'a str);

fn names<'a>(spans: &'a [ExportedSpan], service: &str) -> BTreeSet<&'a str> {
    spans
        .iter()
        .filter(|span| span.service == service)
        .map(|span| span.name.as_str())
        .collect()
}

const CLIENT_SPANS: [&str; 4] = ["archive", "copy", "run", "task"];
const EXECUTOR_SPANS: [&str; 3] = ["archive", "executor", "task"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_exports_the_spans_of_client_and_executor_in_one_trace() {
    let collector = Collector::default();
    let addr = collector.serve().await;
    let repo = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    common::write_files(repo.path(), &[("input.txt", "in")]);

    // The endpoint is set on the child only (the executor inherits it from `buildr run`). The
    // batch exporter's schedule is pushed past the end of the run, so the spans that arrive
    // are the ones flushed by the provider's shutdown at exit.
    let mut command = tokio::process::Command::new(common::buildr_bin());
    command
        .arg("run")
        .arg("--repo")
        .arg(repo.path())
        .arg("--out")
        .arg(out.path())
        .args(["--", "sh", "-c", "echo hi > f"])
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_SDK_DISABLED")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("buildr run finishes within 60s")
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", common::stderr(&output));
    assert_eq!(
        std::fs::read_to_string(out.path().join("f")).unwrap(),
        "hi\n"
    );

    // The client has exited; the executor's export may still be in flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = collector.spans();
        let complete = names(&spans, "buildr").is_superset(&CLIENT_SPANS.into())
            && names(&spans, "buildr-executor").is_superset(&EXECUTOR_SPANS.into());
        if complete || Instant::now() >= deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(
        names(&spans, "buildr"),
        CLIENT_SPANS.into(),
        "client spans: {spans:#?}"
    );
    assert_eq!(
        names(&spans, "buildr-executor"),
        EXECUTOR_SPANS.into(),
        "executor spans: {spans:#?}"
    );
    let services: BTreeSet<&str> = spans.iter().map(|span| span.service.as_str()).collect();
    assert_eq!(services, ["buildr", "buildr-executor"].into());

    let trace_ids: BTreeSet<&str> = spans.iter().map(|span| span.trace_id.as_str()).collect();
    assert_eq!(trace_ids.len(), 1, "one trace: {spans:#?}");
    assert_ne!(
        trace_ids.first().unwrap(),
        &"00000000000000000000000000000000"
    );

    // The tree: the executor's `executor` span is a child of the client's `task` span, whose
    // context went over gRPC.
    let parents: BTreeSet<(SpanKey, Option<SpanKey>)> = spans
        .iter()
        .map(|span| {
            let parent = spans
                .iter()
                .find(|p| p.span_id == span.parent_span_id)
                .map(|p| (p.service.as_str(), p.name.as_str()));
            ((span.service.as_str(), span.name.as_str()), parent)
        })
        .collect();
    assert_eq!(
        parents,
        [
            (("buildr", "run"), None),
            (("buildr", "copy"), Some(("buildr", "run"))),
            (("buildr", "task"), Some(("buildr", "run"))),
            (("buildr", "archive"), Some(("buildr", "run"))),
            (("buildr-executor", "executor"), Some(("buildr", "task"))),
            (
                ("buildr-executor", "task"),
                Some(("buildr-executor", "executor"))
            ),
            (
                ("buildr-executor", "archive"),
                Some(("buildr-executor", "task"))
            ),
        ]
        .into(),
        "span tree: {spans:#?}"
    );
    assert!(
        spans
            .iter()
            .any(|span| span.name == "run" && span.parent_span_id.is_empty()),
        "`run` is the root: {spans:#?}"
    );
}
