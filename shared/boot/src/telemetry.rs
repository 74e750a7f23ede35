//! Logging setup: JSON lines in Lambda (CloudWatch), readable text on a laptop.
//! Filtered by `RUST_LOG` (default `info`), written to stderr.

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
    // Logs go to stderr; stdout is left to what a command prints for people.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}
