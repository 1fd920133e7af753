//! Tracing for the client and the executor: a console subscriber switched by `-v` or `RUST_LOG`,
//! OpenTelemetry spans (exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), and the W3C
//! trace context carried from client to executor in gRPC metadata, so that the executor's spans
//! join the client's trace.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes exported spans when dropped; keep it alive for the life of the program.
pub struct Guard {
    provider: SdkTracerProvider,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// The console filter for a `-v` count when `RUST_LOG` is not set.
fn default_filter(verbosity: u8) -> &'static str {
    match verbosity {
        // The Kubernetes client logs every failed request (an unreachable server, twenty
        // times while a deletion retries), its watcher every failed list and its TLS verifier
        // every refused certificate; buildr says itself, once, what a failure means (the
        // server and why it cannot be reached, the permission a refusal lacks). `-v` shows
        // them.
        0 => "warn,kube_client=off,kube_runtime=off,rustls_platform_verifier=off",
        1 => "info,buildr=debug,h2=warn,tower=warn,hyper_util=warn",
        2 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber: console output on stderr, and OpenTelemetry spans.
pub fn init(verbosity: u8, service_name: &'static str) -> Guard {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(verbosity)));
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(verbosity > 1)
        .with_filter(filter);

    let provider = tracer_provider(service_name);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("buildr"))
        .with_filter(EnvFilter::new("buildr=debug"));
    let _ = tracing_subscriber::registry()
        .with(console)
        .with(otel)
        .try_init();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Guard { provider }
}

/// Spans are always recorded so that trace ids exist and travel; they leave the process only
/// when an OTLP endpoint is configured in the standard variables.
fn tracer_provider(service_name: &'static str) -> SdkTracerProvider {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let otlp_configured = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    if !otlp_configured {
        return builder.build();
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => builder.with_batch_exporter(exporter).build(),
        Err(e) => {
            eprintln!("buildr: OTLP export is off: {e}");
            builder.build()
        }
    }
}

/// The trace id of the current span, in hex (all zeros outside a trace).
pub fn current_trace_id() -> String {
    tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id()
        .to_string()
}

/// The current span's context as W3C headers (`traceparent`, `tracestate`).
pub fn current_context_headers() -> HashMap<String, String> {
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut headers);
    headers
}

/// Adds the current span's context to outgoing gRPC metadata.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    TraceContextPropagator::new().inject_context(
        &tracing::Span::current().context(),
        &mut MetadataInjector(metadata),
    );
}

/// Makes `span` a child of the remote context found in the metadata or, failing that, in the
/// request's own copy of the headers.
pub fn adopt_remote_parent(
    span: &tracing::Span,
    metadata: &tonic::metadata::MetadataMap,
    fallback: &HashMap<String, String>,
) {
    let propagator = TraceContextPropagator::new();
    let mut parent = propagator.extract(&MetadataExtractor(metadata));
    if !parent.span().span_context().is_valid() {
        parent = propagator.extract(fallback);
    }
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
