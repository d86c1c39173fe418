//! Reading a sidecar's log lines back: the text format
//! (`time<TAB>level<TAB>target<TAB>message<TAB>key=value ...`, strings quoted
//! with escapes, other values bare) and JSON lines, so tests can check field
//! names in order, whether a value was written quoted, and the values.

use serde_json::Value;

/// A field value as written in a text line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// Written as a quoted, escaped string (`key="value"`).
    Quoted(String),
    /// Written bare (`key=value`): numbers, addresses.
    Bare(String),
}

impl Field {
    /// The value without quotes.
    pub fn value(&self) -> &str {
        match self {
            Field::Quoted(v) | Field::Bare(v) => v,
        }
    }
}

/// One text log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub level: String,
    pub target: String,
    pub message: String,
    /// In the order written.
    pub fields: Vec<(String, Field)>,
}

impl LogLine {
    /// Parses one text line; `None` when it is not in the sidecar's text format.
    pub fn parse(line: &str) -> Option<LogLine> {
        let mut parts = line.splitn(5, '\t');
        let time = parts.next()?.to_string();
        let level = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        let message = parts.next()?.to_string();
        let fields = parse_fields(parts.next().unwrap_or_default())?;
        Some(LogLine {
            time,
            level,
            target,
            message,
            fields,
        })
    }

    /// The field names, in order.
    pub fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }

    pub fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The unquoted value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.field(key).map(Field::value)
    }
}

fn parse_fields(mut s: &str) -> Option<Vec<(String, Field)>> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches(' ');
        if s.is_empty() {
            return Some(out);
        }
        let (key, rest) = s.split_once('=')?;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        't' => value.push('\t'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            };
            out.push((key.to_string(), Field::Quoted(value)));
            s = &quoted[end + 1..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push((key.to_string(), Field::Bare(rest[..end].to_string())));
            s = &rest[end..];
        }
    }
}

/// The access log lines (target `access`) of a text log.
pub fn access_lines(log: &str) -> Vec<LogLine> {
    log.lines()
        .filter_map(LogLine::parse)
        .filter(|l| l.target == "access")
        .collect()
}

/// The access log objects (`"scope":"access"`) of a JSON-lines log. Panics on a
/// line that is not a JSON object: with `LOG_FORMAT=json` every line must be one.
pub fn json_access_lines(log: &str) -> Vec<serde_json::Map<String, Value>> {
    log.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => o,
            other => panic!("not a JSON object line: {l:?} ({other:?})"),
        })
        .filter(|o| o.get("scope").and_then(Value::as_str) == Some("access"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_split_into_quoted_and_bare_fields_in_order() {
        let l = LogLine::parse(
            "2026-01-01T00:00:00.000001Z\terror\taccess\tconnection complete\tsrc.addr=127.0.0.1:5 dst.service=\"a b\" bytes_sent=3 error=\"x \\\"y\\\"\"",
        )
        .unwrap();
        assert_eq!(l.level, "error");
        assert_eq!(l.message, "connection complete");
        assert_eq!(l.keys(), ["src.addr", "dst.service", "bytes_sent", "error"]);
        assert_eq!(
            l.field("src.addr"),
            Some(&Field::Bare("127.0.0.1:5".into()))
        );
        assert_eq!(l.field("dst.service"), Some(&Field::Quoted("a b".into())));
        assert_eq!(l.get("error"), Some("x \"y\""));
    }
}
