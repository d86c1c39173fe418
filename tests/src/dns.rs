//! A DNS server stand-in (the task's VPC resolver, which is outside the machine):
//! answers A queries for a fixed table over UDP in the real wire format (RFC
//! 1035), NXDOMAIN for every other name, and records every name asked for.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u16 = 3;

/// A running DNS stand-in; stops when dropped.
pub struct DnsServer {
    queries: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Serves on `socket`; `records` are (name without trailing dot, address).
    pub fn start(socket: UdpSocket, records: &[(&str, Ipv4Addr)]) -> DnsServer {
        let records: Vec<(String, Ipv4Addr)> = records
            .iter()
            .map(|(n, ip)| (n.to_ascii_lowercase(), *ip))
            .collect();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let seen = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let Some((name, qtype, question_end)) = parse_query(&buf[..n]) else {
                    continue;
                };
                seen.lock().unwrap().push(name.clone());
                let known: Vec<Ipv4Addr> = records
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, ip)| *ip)
                    .collect();
                let answers: &[Ipv4Addr] = if qtype == TYPE_A { &known } else { &[] };
                let rcode = if known.is_empty() { RCODE_NXDOMAIN } else { 0 };
                let reply = build_reply(&buf[..question_end], answers, rcode);
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        DnsServer { queries, task }
    }

    /// Every name asked for so far (lowercase, no trailing dot).
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// (name, qtype, end of the question section) of a one-question query.
fn parse_query(msg: &[u8]) -> Option<(String, u16, usize)> {
    let qdcount = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
    if qdcount != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // compression pointers do not occur in queries
        }
        labels.push(std::str::from_utf8(msg.get(i..i + len)?).ok()?);
        i += len;
    }
    let qtype = u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]);
    let name = labels.join(".").to_ascii_lowercase();
    Some((name, qtype, i + 4))
}

/// Header + the query's question + A answers pointing back at the question name.
fn build_reply(query: &[u8], answers: &[Ipv4Addr], rcode: u16) -> Vec<u8> {
    let rd = u16::from_be_bytes([query[2], query[3]]) & 0x0100;
    let flags = 0x8000 | 0x0400 | rd | 0x0080 | rcode; // QR, AA, RD copied, RA
    let mut out = Vec::with_capacity(query.len() + answers.len() * 16);
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..]);
    for ip in answers {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}
