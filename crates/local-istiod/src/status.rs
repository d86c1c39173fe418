//! What the server has seen: open streams, the last ACK and NACK of every
//! node per type, recent NACKs, certificates issued and refused, and the state
//! of the mesh file. The admin endpoint serves it as JSON (`GET /status`);
//! tests read it to check what a client told the control plane.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How many NACKs are kept (the oldest are dropped first).
pub const NACK_HISTORY: usize = 100;

/// The `/status` document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Whether the server is paused (refusing ADS and CA calls).
    pub paused: bool,
    /// How many times the mesh file has been loaded successfully.
    pub generation: u64,
    /// Resources served, by type URL.
    pub resources: BTreeMap<String, usize>,
    /// The ADS streams open now.
    pub streams: Vec<StreamRecord>,
    /// Per node id, per type URL: the last ACK and NACK.
    pub nodes: BTreeMap<String, BTreeMap<String, TypeRecord>>,
    /// The most recent NACKs, oldest first.
    pub nacks: Vec<NackRecord>,
    /// What the CA did.
    pub ca: CaRecord,
    /// Why the mesh file was last refused, if its current content is refused.
    pub config_error: Option<String>,
}

/// One open ADS stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRecord {
    /// Stream number, from 1, in order of opening.
    pub id: u64,
    /// The client's address.
    pub peer: String,
    /// Who the caller authenticated as.
    pub caller: String,
    /// The node id from the first request, once received.
    pub node: Option<String>,
    /// When the stream opened (RFC 3339).
    pub opened_at: String,
    /// The request's custom (`x-…`) metadata, as [`custom_headers`] keeps it.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// ACK/NACK state of one node for one type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeRecord {
    /// ACKs received.
    pub acks: u64,
    /// NACKs received.
    pub nacks: u64,
    /// The last ACK.
    pub last_ack: Option<AckRecord>,
    /// The last NACK.
    pub last_nack: Option<NackRecord>,
}

/// An ACK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckRecord {
    /// The nonce acknowledged.
    pub nonce: String,
    /// When (RFC 3339).
    pub at: String,
}

/// A NACK: the client rejected (some of) a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NackRecord {
    /// The node id of the client.
    pub node: String,
    /// The type URL of the response.
    pub type_url: String,
    /// The nonce of the response.
    pub nonce: String,
    /// The client's `error_detail.message` (`<name>: <reason>; …` from ztunnel).
    pub message: String,
    /// When (RFC 3339).
    pub at: String,
}

/// What the CA did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaRecord {
    /// Certificates issued.
    pub issued: u64,
    /// Requests refused.
    pub refused: u64,
    /// The identity of the last certificate issued.
    pub last_identity: Option<String>,
    /// Why the last refused request was refused.
    pub last_refusal: Option<String>,
    /// The custom (`x-…`) metadata of the last certificate request.
    #[serde(default)]
    pub last_headers: BTreeMap<String, String>,
}

/// The custom request metadata a client sent (keys starting with `x-`, ASCII
/// values), which operators add with `XDS_HEADER_*` / `CA_HEADER_*`; tests
/// read it back from `/status` to see which endpoint got which header.
pub fn custom_headers(md: &tonic::metadata::MetadataMap) -> BTreeMap<String, String> {
    md.iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-") => {
                Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
            }
            _ => None,
        })
        .collect()
}

/// The live record behind [`StatusReport`]. Every method takes the lock for a
/// few map operations only.
#[derive(Debug, Default)]
pub struct StatusBook {
    inner: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    streams: BTreeMap<u64, StreamRecord>,
    nodes: BTreeMap<String, BTreeMap<String, TypeRecord>>,
    nacks: VecDeque<NackRecord>,
    ca: CaRecord,
    config_error: Option<String>,
}

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl StatusBook {
    fn with<R>(&self, f: impl FnOnce(&mut Book) -> R) -> R {
        // A panic while holding this lock leaves plain data behind; keep using it.
        let mut book = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut book)
    }

    /// A stream opened.
    pub fn stream_opened(
        &self,
        id: u64,
        peer: String,
        caller: String,
        headers: BTreeMap<String, String>,
    ) {
        self.with(|b| {
            b.streams.insert(
                id,
                StreamRecord {
                    id,
                    peer,
                    caller,
                    node: None,
                    opened_at: now_rfc3339(),
                    headers,
                },
            )
        });
    }

    /// A stream's node id arrived.
    pub fn stream_node(&self, id: u64, node: &str) {
        self.with(|b| {
            if let Some(s) = b.streams.get_mut(&id) {
                s.node = Some(node.to_string());
            }
        });
    }

    /// A stream closed.
    pub fn stream_closed(&self, id: u64) {
        self.with(|b| b.streams.remove(&id));
    }

    /// An ACK arrived.
    pub fn ack(&self, node: &str, type_url: &str, nonce: &str) {
        self.with(|b| {
            let r = type_record(b, node, type_url);
            r.acks += 1;
            r.last_ack = Some(AckRecord {
                nonce: nonce.to_string(),
                at: now_rfc3339(),
            });
        });
    }

    /// A NACK arrived.
    pub fn nack(&self, node: &str, type_url: &str, nonce: &str, message: &str) {
        let record = NackRecord {
            node: node.to_string(),
            type_url: type_url.to_string(),
            nonce: nonce.to_string(),
            message: message.to_string(),
            at: now_rfc3339(),
        };
        self.with(|b| {
            let r = type_record(b, node, type_url);
            r.nacks += 1;
            r.last_nack = Some(record.clone());
            if b.nacks.len() == NACK_HISTORY {
                b.nacks.pop_front();
            }
            b.nacks.push_back(record);
        });
    }

    /// A certificate was issued.
    pub fn issued(&self, identity: &str, headers: BTreeMap<String, String>) {
        self.with(|b| {
            b.ca.last_headers = headers;
            b.ca.issued += 1;
            b.ca.last_identity = Some(identity.to_string());
        });
    }

    /// A CA request was refused.
    pub fn refused(&self, why: &str) {
        self.with(|b| {
            b.ca.refused += 1;
            b.ca.last_refusal = Some(why.to_string());
        });
    }

    /// The mesh file was refused (`Some`) or loaded (`None`).
    pub fn config_error(&self, error: Option<String>) {
        self.with(|b| b.config_error = error);
    }

    /// The document, with the parts the book does not own filled in by the caller.
    pub fn report(
        &self,
        paused: bool,
        generation: u64,
        resources: BTreeMap<String, usize>,
    ) -> StatusReport {
        self.with(|b| StatusReport {
            paused,
            generation,
            resources,
            streams: b.streams.values().cloned().collect(),
            nodes: b.nodes.clone(),
            nacks: b.nacks.iter().cloned().collect(),
            ca: b.ca.clone(),
            config_error: b.config_error.clone(),
        })
    }
}

fn type_record<'a>(b: &'a mut Book, node: &str, type_url: &str) -> &'a mut TypeRecord {
    b.nodes
        .entry(node.to_string())
        .or_default()
        .entry(type_url.to_string())
        .or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nack_is_kept_per_node_and_in_history() {
        let book = StatusBook::default();
        book.ack("n1", "t", "1");
        book.nack("n1", "t", "2", "w: bad");
        let r = book.report(false, 1, BTreeMap::new());
        let t = &r.nodes["n1"]["t"];
        assert_eq!((t.acks, t.nacks), (1, 1));
        assert_eq!(t.last_ack.as_ref().unwrap().nonce, "1");
        assert_eq!(t.last_nack.as_ref().unwrap().message, "w: bad");
        assert_eq!(r.nacks.len(), 1);
    }

    #[test]
    fn nack_history_is_bounded() {
        let book = StatusBook::default();
        for i in 0..(NACK_HISTORY + 5) {
            book.nack("n", "t", &i.to_string(), "x");
        }
        let r = book.report(false, 1, BTreeMap::new());
        assert_eq!(r.nacks.len(), NACK_HISTORY);
        assert_eq!(r.nacks[0].nonce, "5");
    }

    #[test]
    fn report_round_trips_through_json() {
        let book = StatusBook::default();
        book.stream_opened(1, "127.0.0.1:1".into(), "open".into(), BTreeMap::new());
        book.stream_node(1, "ztunnel~1.1.1.1~a.ns~ns.svc.cluster.local");
        let r = book.report(true, 3, BTreeMap::from([("t".to_string(), 2)]));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"configError\":null"), "{json}");
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
