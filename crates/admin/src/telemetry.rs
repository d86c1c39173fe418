//! Logging: ztunnel's text and JSON line formats, a `RUST_LOG`-style filter,
//! and the runtime control behind the admin `/logging` endpoint.
//!
//! The filter is a list of `target=level` directives plus an optional default
//! level (`info`, `zs_proxy=debug,info`), the syntax ztunnel accepts in
//! `RUST_LOG`. It can be changed while running through [`LogControl`]; the
//! change takes effect for every thread at once.
//!
//! Text lines look like ztunnel's:
//!
//! ```text
//! 2024-05-03T20:06:03.785484Z<TAB>info<TAB>access<TAB>connection complete<TAB>src.addr=10.0.0.1:41338 src.workload="sleep" direction="outbound" bytes_sent=75
//! ```
//!
//! (`<TAB>` is a tab: time, level, target and any spans, message, then
//! `key=value` fields with strings quoted). JSON lines carry the same facts,
//! one object per line with every field at the top level, so a log pipeline
//! such as CloudWatch Logs indexes `src.addr` or `bytes_sent` directly:
//!
//! ```text
//! {"level":"info","time":"2024-05-03T20:06:03.785484Z","scope":"access","message":"connection complete","src.addr":"10.0.0.1:41338","bytes_sent":75}
//! ```
//!
//! Access logs are ordinary events with target `access`; nothing here is
//! specific to them except that dotted field names print unchanged.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::ser::{SerializeMap, Serializer as _};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::{Layer, reload};

/// The filter used when none is given (ztunnel's default).
pub const DEFAULT_FILTER: &str = "info";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Tab-separated text, ztunnel's default.
    #[default]
    Text,
    /// One JSON object per line (ztunnel's `LOG_FORMAT=json`).
    Json,
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    /// Accepts `json`, and `plain` or `text` for the text format.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(LogFormat::Json),
            "plain" | "text" => Ok(LogFormat::Text),
            other => Err(TelemetryError::UnknownFormat(other.to_owned())),
        }
    }
}

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log format name is not known.
    #[error("unknown log format {0:?}: expected \"plain\" or \"json\"")]
    UnknownFormat(String),
    /// A filter or level specification was refused.
    #[error("invalid log level {spec:?}: {reason}")]
    InvalidFilter {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another global logger was installed first.
    #[error("a global logger is already installed")]
    AlreadyInitialized,
    /// The logger this control belongs to is gone.
    #[error("changing the log filter failed: {0}")]
    Reload(#[from] reload::Error),
}

/// Reads and changes the log filter at runtime. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogControl {
    handle: reload::Handle<Targets, Registry>,
    startup: Targets,
}

impl LogControl {
    /// The filter in force, in `RUST_LOG` syntax (for example `info` or
    /// `zs_proxy=debug,info`).
    pub fn current(&self) -> Result<String, TelemetryError> {
        Ok(self.handle.with_current(|f| f.to_string())?)
    }

    /// Adds `spec` to the filter in force and returns the new filter. `spec` is
    /// a comma-separated list of levels (`debug`: the default level) and
    /// `target=level` directives; a directive replaces an earlier one for the
    /// same target. With `reset`, the startup filter is restored first (and an
    /// empty `spec` just restores it).
    pub fn apply(&self, reset: bool, spec: &str) -> Result<String, TelemetryError> {
        if !spec.is_empty() {
            validate_spec(spec)?;
        }
        let base = if reset {
            self.startup.to_string()
        } else {
            self.current()?
        };
        let combined = match (base.is_empty(), spec.is_empty()) {
            (_, true) => base,
            (true, false) => spec.to_owned(),
            (false, false) => format!("{base},{spec}"),
        };
        // Parsing twice drops directives that a later one replaced, so the
        // filter's maximum level (a hint tracing uses to skip disabled events
        // cheaply) falls again when a level is lowered.
        let merged = parse_targets(&combined)?;
        let filter = parse_targets(&merged.to_string())?;
        let text = filter.to_string();
        self.handle.reload(filter)?;
        tracing::info!(filter = %text, "log filter changed");
        Ok(text)
    }
}

/// Checks a `/logging?level=` value. Each comma-separated clause is a level
/// name or `target=level`. A bare target (which the filter syntax would read as
/// "everything for this target") is refused as a likely mistake, as ztunnel does.
pub fn validate_spec(spec: &str) -> Result<(), TelemetryError> {
    let invalid = |reason: String| TelemetryError::InvalidFilter {
        spec: spec.to_owned(),
        reason,
    };
    for clause in spec.split(',') {
        let (target, level) = match clause.split_once('=') {
            Some((target, level)) => (Some(target), level),
            None => (None, clause),
        };
        if let Some(target) = target
            && (target.is_empty()
                || !target
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_:-.".contains(&b)))
        {
            return Err(invalid(format!("{target:?} is not a valid target")));
        }
        if parse_level(level).is_none() {
            return Err(invalid(format!(
                "{level:?} is not a level (off, error, warn, info, debug, trace)"
            )));
        }
    }
    Ok(())
}

fn parse_level(s: &str) -> Option<LevelFilter> {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|name| s.eq_ignore_ascii_case(name))
        .then(|| LevelFilter::from_str(s).ok())
        .flatten()
}

fn parse_targets(spec: &str) -> Result<Targets, TelemetryError> {
    Targets::from_str(spec).map_err(|e| TelemetryError::InvalidFilter {
        spec: spec.to_owned(),
        reason: e.to_string(),
    })
}

/// Installs the process-wide logger writing to standard output.
pub fn init(format: LogFormat, filter: &str) -> Result<LogControl, TelemetryError> {
    init_with_writer(format, filter, io::stdout)
}

/// Installs the process-wide logger writing to `writer`.
pub fn init_with_writer<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<LogControl, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (dispatch, control) = dispatch(format, filter, writer)?;
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|_| TelemetryError::AlreadyInitialized)?;
    Ok(control)
}

/// Builds a logger without installing it, for a scoped default
/// (`tracing::dispatcher::set_default`), which is how tests capture output.
/// `filter` uses `RUST_LOG` syntax; empty means [`DEFAULT_FILTER`].
pub fn dispatch<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
) -> Result<(Dispatch, LogControl), TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = if filter.trim().is_empty() {
        DEFAULT_FILTER
    } else {
        filter
    };
    let startup = parse_targets(filter)?;
    let fmt_layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .event_format(TextFormat)
                .fmt_fields(TextFormat),
        ),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .event_format(JsonFormat)
                .fmt_fields(JsonFields::new()),
        ),
    };
    let (filter_layer, handle) = reload::Layer::new(startup.clone());
    let subscriber = Registry::default().with(fmt_layer.with_filter(filter_layer));
    Ok((Dispatch::new(subscriber), LogControl { handle, startup }))
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// ztunnel's text line: `time \t level \t target[:span{fields}] \t message \t k=v k=v`.
struct TextFormat;

impl<S, N> FormatEvent<S, N> for TextFormat
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
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\t{}\t{}", level_name(meta.level()), meta.target())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, ":{}", span.metadata().name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
            }
        }
        if event.fields().next().is_some() {
            writer.write_char('\t')?;
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

impl<'w> FormatFields<'w> for TextFormat {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            result: Ok(()),
            separator: None,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes the message first and `key=value` pairs after it: a tab between the
/// message and the first pair, a space between pairs. Strings are quoted
/// (Debug), values recorded with `%` print bare, as in ztunnel's lines.
struct TextVisitor<'w> {
    writer: Writer<'w>,
    result: fmt::Result,
    separator: Option<char>,
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value)
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let separator = self.separator;
        self.result = (|| {
            if let Some(sep) = separator {
                self.writer.write_char(sep)?;
            }
            if field.name() == "message" {
                write!(self.writer, "{value:?}")?;
                self.separator = Some('\t');
            } else {
                write!(self.writer, "{}={value:?}", field.name())?;
                self.separator = Some(' ');
            }
            Ok(())
        })();
    }
}

/// ztunnel's JSON line: `level`, `time`, `scope` (the target), then every event
/// field as a top-level key, then each span's fields under the span's name.
struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
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
        let mut time = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let mut out = serde_json::Serializer::new(FmtWriteAdapter(&mut writer));
        let result: Result<(), serde_json::Error> = (|| {
            let mut map = out.serialize_map(None)?;
            map.serialize_entry("level", level_name(meta.level()))?;
            map.serialize_entry("time", &time)?;
            map.serialize_entry("scope", meta.target())?;
            let mut visitor = JsonFieldVisitor {
                map,
                result: Ok(()),
            };
            event.record(&mut visitor);
            visitor.result?;
            let mut map = visitor.map;
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    let ext = span.extensions();
                    if let Some(fields) = ext.get::<FormattedFields<N>>() {
                        let value: serde_json::Value = if fields.is_empty() {
                            serde_json::Value::Object(Default::default())
                        } else {
                            serde_json::from_str(fields).map_err(serde::ser::Error::custom)?
                        };
                        map.serialize_entry(span.metadata().name(), &value)?;
                    }
                }
            }
            map.end()
        })();
        result.map_err(|_| fmt::Error)?;
        writeln!(writer)
    }
}

/// Puts each event field into the JSON object under its own name, keeping
/// numbers and booleans typed.
struct JsonFieldVisitor<M: SerializeMap> {
    map: M,
    result: Result<(), M::Error>,
}

impl<M: SerializeMap> Visit for JsonFieldVisitor<M> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_ok() {
            self.result = self.map.serialize_entry(field.name(), &value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.result.is_ok() {
            self.result = self.map.serialize_entry(field.name(), &value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_ok() {
            self.result = self.map.serialize_entry(field.name(), &value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.result.is_ok() {
            self.result = self.map.serialize_entry(field.name(), &value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.map.serialize_entry(field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self
                .map
                .serialize_entry(field.name(), &format_args!("{value:?}"));
        }
    }
}

/// Lets serde_json write straight into the formatter's buffer.
struct FmtWriteAdapter<'a, 'w>(&'a mut Writer<'w>);

impl io::Write for FmtWriteAdapter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let s =
            std::str::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.0.write_str(s).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_specs_accept_levels_and_target_directives() {
        assert!(validate_spec("debug").is_ok());
        assert!(validate_spec("zs_proxy=debug,access=off,info").is_ok());
        assert!(validate_spec("zs_proxy::outbound=trace").is_ok());
    }

    #[test]
    fn level_specs_refuse_unknown_levels_and_bare_targets() {
        for bad in [
            "loud",
            "zs_proxy",
            "zs_proxy=loud",
            "=debug",
            "debug,",
            "a b=info",
        ] {
            let err = validate_spec(bad).unwrap_err();
            assert!(
                matches!(err, TelemetryError::InvalidFilter { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn log_format_names() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("plain".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
