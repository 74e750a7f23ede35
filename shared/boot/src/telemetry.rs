//! Logging setup: JSON lines in Lambda (CloudWatch), readable text on a laptop.
//! Filtered by `RUST_LOG` (default `info`), written to stderr.
//!
//! A JSON line carries, at its top level, the fields of every span it was
//! written in, outermost first, then the event's own: on Lambda that is the
//! runtime's invocation span (`requestId`, `xrayTraceId`), the invocation's
//! API Gateway request ID (`apigw_request_id`, `lambent-lambda`) and
//! Lambent's request span (`request_id`, `route`, `user_id`...), so any one
//! line can be joined to the access log, Lambda's own lines and the trace.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use lambent_app::config::LogFormat;

/// The format asked for by `LAMBENT_LOG_FORMAT`, else JSON inside Lambda and
/// text elsewhere. Read before the rest of the configuration so that a bad
/// configuration is itself logged.
pub fn format_from_env() -> LogFormat {
    match std::env::var("LAMBENT_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("text") => LogFormat::Text,
        _ if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

/// Installs the global subscriber once; later calls are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout is left to what a command prints for people
    // (and, on Lambda, to the metrics' EMF lines).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}

/// One JSON object per event: `timestamp`, `level`, `target`, the fields of
/// every enclosing span (outermost first; an inner span's field wins), then
/// the event's fields (`message` among them).
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), lambent_core::time::now_rfc3339().into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // JsonFields keeps each span's fields as a JSON object.
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                        line.extend(fields);
                    }
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// An event's fields into the line.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn a_line_carries_the_fields_of_every_enclosing_span() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // As on Lambda: the runtime's span, the invocation's, Lambent's.
            let runtime = tracing::info_span!(
                "Lambda runtime invoke",
                requestId = "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
                xrayTraceId = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700"
            );
            let _r = runtime.enter();
            let invocation =
                tracing::info_span!("invocation", apigw_request_id = "c6af9ac6-7b61-11e6");
            let _i = invocation.enter();
            let request = tracing::info_span!("request", request_id = "req_1", route = "/v1/x");
            let _q = request.enter();
            tracing::warn!(attempt = 2, "provider slow");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(line["requestId"], "8476a536-e9f4-11e8-9739-2dfe598c3fcd");
        assert_eq!(
            line["xrayTraceId"],
            "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700"
        );
        assert_eq!(line["apigw_request_id"], "c6af9ac6-7b61-11e6");
        assert_eq!(line["request_id"], "req_1");
        assert_eq!(line["route"], "/v1/x");
        assert_eq!(line["message"], "provider slow");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["level"], "WARN");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
