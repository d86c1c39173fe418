//! A curl-sized HTTP client for images that have no shell and no curl: what
//! the workshop's `shell-task` runs, `curl http://echo-service.ecs.local:8080/`
//! with `ALL_PROXY=socks5h://127.0.0.1:15080`.
//!
//! ```text
//! mesh-curl [-s] [-S] [-i] [-m SECONDS] [-X METHOD] URL
//! mesh-curl --idle        # wait for `docker exec`, like `sleep infinity`
//! ```
//!
//! Like curl it takes its proxy from `ALL_PROXY` / `all_proxy` (`socks5h://`:
//! the name is resolved by the proxy, which is how mesh names reach the
//! sidecar; `socks5://`: resolved here first), skips it for hosts in
//! `NO_PROXY` / `no_proxy`, prints the body on standard output (`-i`: the
//! status line and headers first), and exits with curl's codes: 0 for any
//! HTTP answer, 6 unresolvable host, 7 cannot connect, 28 timed out,
//! 52 empty reply, 56 connection reset or broken, 97 the proxy refused (the
//! SOCKS5 reply code is in the message: 2 means "not allowed by ruleset", a
//! sidecar's answer to a connection authorization policy denies).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use zs_e2e::{SocksResult, SocksTarget, socks5_handshake};

const USAGE: &str = "usage: mesh-curl [-s] [-S] [-i] [-m SECONDS] [-X METHOD] URL | --idle";

/// Largest body read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// A failure, with curl's exit code.
struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

struct Args {
    silent: bool,
    show_error: bool,
    include: bool,
    max_time: Duration,
    method: http::Method,
    url: String,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut args = Args {
        silent: false,
        show_error: false,
        include: false,
        max_time: Duration::from_secs(30),
        method: http::Method::GET,
        url: String::new(),
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--idle" => return Ok(None),
            "-s" | "--silent" => args.silent = true,
            "-S" | "--show-error" => args.show_error = true,
            "-sS" | "-Ss" => (args.silent, args.show_error) = (true, true),
            "-i" | "--include" => args.include = true,
            "-m" | "--max-time" => {
                let v = it.next().ok_or("-m needs a value")?;
                let secs: f64 = v.parse().map_err(|_| format!("bad -m {v}"))?;
                if !(secs > 0.0 && secs < 86_400.0) {
                    return Err(format!("bad -m {v}"));
                }
                args.max_time = Duration::from_secs_f64(secs);
            }
            "-X" | "--request" => {
                let v = it.next().ok_or("-X needs a value")?;
                args.method = v.parse().map_err(|_| format!("bad method {v}"))?;
            }
            url if !url.starts_with('-') && args.url.is_empty() => args.url = url.to_string(),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if args.url.is_empty() {
        return Err("no URL".into());
    }
    Ok(Some(args))
}

/// How to reach the origin.
enum Proxy {
    None,
    /// `socks5h://`: the proxy resolves names.
    Socks5 {
        addr: String,
        remote_dns: bool,
    },
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// curl's rule: `NO_PROXY` lists hosts (or domain suffixes) to reach directly; `*` is all.
fn no_proxy(host: &str) -> bool {
    let Some(list) = env(&["NO_PROXY", "no_proxy"]) else {
        return false;
    };
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.trim_start_matches('.');
        entry == "*"
            || (!entry.is_empty()
                && (host.eq_ignore_ascii_case(entry)
                    || host
                        .to_ascii_lowercase()
                        .ends_with(&format!(".{}", entry.to_ascii_lowercase()))))
    })
}

fn proxy_for(host: &str) -> Result<Proxy, Failure> {
    if no_proxy(host) {
        return Ok(Proxy::None);
    }
    let Some(url) = env(&["ALL_PROXY", "all_proxy"]) else {
        return Ok(Proxy::None);
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| fail(5, format!("bad proxy URL {url}")))?;
    let remote_dns = match scheme {
        "socks5h" => true,
        "socks5" => false,
        other => return Err(fail(5, format!("unsupported proxy scheme {other}://"))),
    };
    Ok(Proxy::Socks5 {
        addr: rest.trim_end_matches('/').to_string(),
        remote_dns,
    })
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, Failure> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tokio::net::lookup_host((host, port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| fail(6, format!("Could not resolve host: {host}")))
}

async fn dial(addr: &str) -> Result<TcpStream, Failure> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| fail(5, format!("bad address {addr}")))?;
    let target = resolve(host, port).await?;
    TcpStream::connect(target)
        .await
        .map_err(|e| fail(7, format!("Failed to connect to {addr}: {e}")))
}

/// The connection to the origin, through the proxy if any.
async fn connect(host: &str, port: u16) -> Result<TcpStream, Failure> {
    match proxy_for(host)? {
        Proxy::None => dial(&format!("{host}:{port}")).await,
        Proxy::Socks5 { addr, remote_dns } => {
            let stream = dial(&addr).await?;
            let target = match remote_dns {
                true => SocksTarget::Domain(host.to_string(), port),
                false => SocksTarget::Addr(resolve(host, port).await?),
            };
            match socks5_handshake(stream, target).await {
                SocksResult::Connected(s) => Ok(s),
                SocksResult::Refused(code) => Err(fail(
                    97,
                    format!(
                        "Can't complete SOCKS5 connection to {host}. ({code}) reply {code}: {}",
                        socks_reply(code)
                    ),
                )),
                SocksResult::Closed => Err(fail(
                    97,
                    format!("SOCKS5 proxy {addr} closed the connection to {host} without a reply"),
                )),
            }
        }
    }
}

fn socks_reply(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned",
    }
}

async fn fetch(args: &Args) -> Result<String, Failure> {
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|_| fail(3, format!("URL rejected: {}", args.url)))?;
    if uri.scheme_str() != Some("http") {
        return Err(fail(1, "only http:// URLs are supported"));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| fail(3, "URL has no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = connect(authority.host(), port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| {
            fail(
                56,
                format!("Failure when receiving data from the peer: {e}"),
            )
        })?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::builder()
        .method(args.method.clone())
        .uri(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::USER_AGENT, "mesh-curl")
        .header(http::header::ACCEPT, "*/*")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(3, e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| {
        if e.is_incomplete_message() {
            fail(52, "Empty reply from server")
        } else {
            fail(56, format!("Recv failure: {e}"))
        }
    })?;
    let mut out = String::new();
    if args.include {
        out.push_str(&format!(
            "{:?} {}\r\n",
            response.version(),
            response.status()
        ));
        for (name, value) in response.headers() {
            out.push_str(&format!(
                "{name}: {}\r\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        out.push_str("\r\n");
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| fail(56, format!("Recv failure: {e}")))?
        .to_bytes();
    out.push_str(&String::from_utf8_lossy(&body));
    Ok(out)
}

async fn idle() -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return ExitCode::FAILURE;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    ExitCode::SUCCESS
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => return idle().await,
        Err(e) => {
            eprintln!("mesh-curl: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match tokio::time::timeout(args.max_time, fetch(&args)).await {
        Ok(r) => r,
        Err(_) => Err(fail(
            28,
            format!(
                "Operation timed out after {} milliseconds",
                args.max_time.as_millis()
            ),
        )),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            if !args.silent || args.show_error {
                eprintln!("mesh-curl: ({}) {}", f.code, f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
