//! Scraping a sidecar's Prometheus endpoint the way a scraper does, and reading
//! the exposition back into samples whose label order is kept, so tests can
//! check names, label sets in order and values exactly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 response: status, headers (names lowercased) and body bytes.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
}

/// One HTTP/1.1 request with `Connection: close`; the body is read to the end
/// (chunked bodies are decoded).
pub async fn http_fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<RawResponse> {
    let timeout = |what: &'static str| std::io::Error::new(std::io::ErrorKind::TimedOut, what);
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .map_err(|_| timeout("connect"))??;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .map_err(|_| timeout("read"))??;
    parse_response(&raw)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad HTTP response"))
}

fn parse_response(raw: &[u8]) -> Option<RawResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// One sample line: metric name, labels in the order they were written, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every `(key, value)` of `want` is among the labels.
    pub fn matches(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE <family> <type>` lines, in order.
    pub types: Vec<(String, String)>,
    /// The text ended with `# EOF` (OpenMetrics).
    pub eof: bool,
    pub text: String,
}

impl Exposition {
    /// Parses the text format (classic or OpenMetrics). Panics on a line that is
    /// neither a comment nor a well-formed sample: the endpoint must not emit one.
    pub fn parse(text: &str) -> Exposition {
        let mut e = Exposition {
            text: text.to_string(),
            ..Default::default()
        };
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if line == "# EOF" {
                e.eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').expect("TYPE line");
                e.types.push((family.to_string(), kind.to_string()));
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            e.samples
                .push(parse_sample(line).unwrap_or_else(|| panic!("bad sample line: {line}")));
        }
        e
    }

    /// Every sample of metric `name`.
    pub fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The one sample of `name` whose labels include `want`; panics when there
    /// are several.
    pub fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .series(name)
            .into_iter()
            .filter(|s| s.matches(want))
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {want:?} matches {} series:\n{found:#?}",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// The sum of `name` over the series whose labels include `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.series(name)
            .into_iter()
            .filter(|s| s.matches(want))
            .map(|s| s.value)
            .sum()
    }

    /// The declared type of a family (`counter`, `gauge`, …).
    pub fn type_of(&self, family: &str) -> Option<&str> {
        self.types
            .iter()
            .find(|(f, _)| f == family)
            .map(|(_, t)| t.as_str())
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let Some(open) = line.find('{') else {
        let (name, value) = line.split_once(' ')?;
        return Some(Sample {
            name: name.to_string(),
            labels: Vec::new(),
            value: value.trim().parse().ok()?,
        });
    };
    let name = line[..open].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[open + 1..];
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        }
        let (key, after_key) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let close = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.push((key.to_string(), value));
        rest = &after_key[close + 1..];
    }
    // OpenMetrics may append a timestamp or exemplar; the value comes first.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Scrapes `path` (`/stats/prometheus` or `/metrics`) at `addr`.
pub async fn scrape_path(addr: SocketAddr, path: &str) -> Exposition {
    let resp = http_fetch(addr, "GET", path, &[])
        .await
        .unwrap_or_else(|e| panic!("scraping {addr}{path}: {e}"));
    assert_eq!(resp.status, 200, "scraping {addr}{path}");
    Exposition::parse(&resp.text())
}

/// Scrapes `/stats/prometheus` at `addr`.
pub async fn scrape(addr: SocketAddr) -> Exposition {
    scrape_path(addr, "/stats/prometheus").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_keep_label_order_and_unescape_values() {
        let e = Exposition::parse(
            "# TYPE a counter\na_total{z=\"1\",b=\"x\\\"y\\\\\",c=\"\"} 3\nb 2.5\n# EOF\n",
        );
        assert!(e.eof);
        assert_eq!(e.type_of("a"), Some("counter"));
        assert_eq!(
            e.samples[0].labels,
            vec![
                ("z".to_string(), "1".to_string()),
                ("b".to_string(), "x\"y\\".to_string()),
                ("c".to_string(), String::new())
            ]
        );
        assert_eq!(e.samples[0].value, 3.0);
        assert_eq!(e.get("b", &[]), Some(2.5));
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.body, b"abcde");
    }
}
