//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame header, parsing of every
//! frame type HBONE meets, and encoders for the frames this crate sends.
//!
//! Parsing is pure and never panics: a frame is checked against the sizes and
//! stream-id rules of its type and comes back as a [`Frame`] whose variable
//! parts are byte ranges into the payload (so DATA can be handed on without a
//! copy), or as a [`FrameError`] naming the error code to answer with.
//! Header blocks are encoded here too ([`encode_headers`]): literals without
//! indexing and without Huffman coding, which every HPACK decoder accepts and
//! which keeps no encoder state.

use std::fmt;
use std::ops::Range;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Size of a frame header.
pub const HEADER_LEN: usize = 9;
/// The protocol's initial flow-control window and smallest max frame size.
pub const DEFAULT_WINDOW: u32 = 65_535;
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
/// The largest MAX_FRAME_SIZE and window the protocol allows.
pub const MAX_MAX_FRAME: u32 = (1 << 24) - 1;
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
pub const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

/// An HTTP/2 error code (RFC 9113 §7), as sent in RST_STREAM and GOAWAY.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const SETTINGS_TIMEOUT: Reason = Reason(0x4);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const CONNECT_ERROR: Reason = Reason(0xa);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
    pub const INADEQUATE_SECURITY: Reason = Reason(0xc);
    pub const HTTP_1_1_REQUIRED: Reason = Reason(0xd);

    /// The code's name in RFC 9113, if it has one.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => return None,
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "unknown error code {:#x}", self.0),
        }
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// The stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl Head {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Head {
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let len = self.len.to_be_bytes();
        let id = self.stream.to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, id[0], id[1], id[2], id[3],
        ]
    }
}

/// Why a frame was refused: a connection error ends the connection with a
/// GOAWAY, a stream error resets only that stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    Connection(Reason, &'static str),
    Stream(u32, Reason),
}

/// A parsed frame. Ranges index into the payload it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        end_stream: bool,
        /// The data, padding removed.
        data: Range<usize>,
    },
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        /// The header block fragment, padding and priority removed.
        block: Range<usize>,
    },
    Priority,
    RstStream {
        stream: u32,
        reason: Reason,
    },
    Settings {
        ack: bool,
    },
    PushPromise,
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        reason: Reason,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        block: Range<usize>,
    },
    /// A frame type this implementation does not know: ignored (RFC 9113 §4.1).
    Unknown,
}

fn conn_err(reason: Reason, what: &'static str) -> FrameError {
    FrameError::Connection(reason, what)
}

/// Removes padding (PADDED flag) from `payload`, returning the range of what remains.
fn unpad(head: &Head, payload: &[u8]) -> Result<Range<usize>, FrameError> {
    if head.flags & FLAG_PADDED == 0 {
        return Ok(0..payload.len());
    }
    let Some((&pad, _)) = payload.split_first() else {
        return Err(conn_err(
            Reason::FRAME_SIZE_ERROR,
            "padded frame without a pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(conn_err(
            Reason::PROTOCOL_ERROR,
            "padding longer than the frame",
        ));
    }
    Ok(1..payload.len() - pad)
}

/// Parses one frame whose header is `head` and whose payload (exactly
/// `head.len` bytes) is `payload`.
pub fn parse(head: &Head, payload: &[u8]) -> Result<Frame, FrameError> {
    let stream = head.stream;
    let need_stream = |what| {
        if stream == 0 {
            Err(conn_err(Reason::PROTOCOL_ERROR, what))
        } else {
            Ok(())
        }
    };
    let need_conn = |what| {
        if stream != 0 {
            Err(conn_err(Reason::PROTOCOL_ERROR, what))
        } else {
            Ok(())
        }
    };
    Ok(match head.kind {
        DATA => {
            need_stream("DATA on stream 0")?;
            Frame::Data {
                stream,
                end_stream: head.flags & FLAG_END_STREAM != 0,
                data: unpad(head, payload)?,
            }
        }
        HEADERS => {
            need_stream("HEADERS on stream 0")?;
            let mut block = unpad(head, payload)?;
            if head.flags & FLAG_PRIORITY != 0 {
                if block.len() < 5 {
                    return Err(conn_err(
                        Reason::FRAME_SIZE_ERROR,
                        "HEADERS priority truncated",
                    ));
                }
                let dep = u32::from_be_bytes([
                    payload[block.start],
                    payload[block.start + 1],
                    payload[block.start + 2],
                    payload[block.start + 3],
                ]) & MAX_WINDOW;
                if dep == stream {
                    return Err(FrameError::Stream(stream, Reason::PROTOCOL_ERROR));
                }
                block.start += 5;
            }
            Frame::Headers {
                stream,
                end_stream: head.flags & FLAG_END_STREAM != 0,
                end_headers: head.flags & FLAG_END_HEADERS != 0,
                block,
            }
        }
        PRIORITY => {
            need_stream("PRIORITY on stream 0")?;
            if payload.len() != 5 {
                return Err(FrameError::Stream(stream, Reason::FRAME_SIZE_ERROR));
            }
            Frame::Priority
        }
        RST_STREAM => {
            need_stream("RST_STREAM on stream 0")?;
            let code: [u8; 4] = payload
                .try_into()
                .map_err(|_| conn_err(Reason::FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes"))?;
            Frame::RstStream {
                stream,
                reason: Reason(u32::from_be_bytes(code)),
            }
        }
        SETTINGS => {
            need_conn("SETTINGS on a stream")?;
            let ack = head.flags & FLAG_ACK != 0;
            if ack && !payload.is_empty() {
                return Err(conn_err(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS ACK with a payload",
                ));
            }
            if !payload.len().is_multiple_of(6) {
                return Err(conn_err(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS not a multiple of 6 bytes",
                ));
            }
            for (id, value) in settings(payload) {
                check_setting(id, value)?;
            }
            Frame::Settings { ack }
        }
        PUSH_PROMISE => Frame::PushPromise,
        PING => {
            need_conn("PING on a stream")?;
            let payload: [u8; 8] = payload
                .try_into()
                .map_err(|_| conn_err(Reason::FRAME_SIZE_ERROR, "PING not 8 bytes"))?;
            Frame::Ping {
                ack: head.flags & FLAG_ACK != 0,
                payload,
            }
        }
        GOAWAY => {
            need_conn("GOAWAY on a stream")?;
            if payload.len() < 8 {
                return Err(conn_err(
                    Reason::FRAME_SIZE_ERROR,
                    "GOAWAY shorter than 8 bytes",
                ));
            }
            Frame::GoAway {
                last_stream: u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & MAX_WINDOW,
                reason: Reason(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ])),
            }
        }
        WINDOW_UPDATE => {
            let inc: [u8; 4] = payload
                .try_into()
                .map_err(|_| conn_err(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes"))?;
            let increment = u32::from_be_bytes(inc) & MAX_WINDOW;
            if increment == 0 {
                return Err(if stream == 0 {
                    conn_err(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                } else {
                    FrameError::Stream(stream, Reason::PROTOCOL_ERROR)
                });
            }
            Frame::WindowUpdate { stream, increment }
        }
        CONTINUATION => {
            need_stream("CONTINUATION on stream 0")?;
            Frame::Continuation {
                stream,
                end_headers: head.flags & FLAG_END_HEADERS != 0,
                block: 0..payload.len(),
            }
        }
        _ => Frame::Unknown,
    })
}

/// The (identifier, value) pairs of a SETTINGS payload whose length is a multiple of 6.
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    })
}

fn check_setting(id: u16, value: u32) -> Result<(), FrameError> {
    match id {
        SETTINGS_ENABLE_PUSH | SETTINGS_ENABLE_CONNECT_PROTOCOL if value > 1 => Err(conn_err(
            Reason::PROTOCOL_ERROR,
            "boolean setting not 0 or 1",
        )),
        SETTINGS_INITIAL_WINDOW_SIZE if value > MAX_WINDOW => Err(conn_err(
            Reason::FLOW_CONTROL_ERROR,
            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
        )),
        SETTINGS_MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME..=MAX_MAX_FRAME).contains(&value) => {
            Err(conn_err(
                Reason::PROTOCOL_ERROR,
                "SETTINGS_MAX_FRAME_SIZE out of range",
            ))
        }
        _ => Ok(()),
    }
}

/// Appends a frame header.
pub fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len)
        .unwrap_or(MAX_MAX_FRAME)
        .min(MAX_MAX_FRAME);
    out.extend_from_slice(
        &Head {
            len,
            kind,
            flags,
            stream,
        }
        .encode(),
    );
}

/// Appends a SETTINGS frame with `params`.
pub fn put_settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    put_head(out, params.len() * 6, SETTINGS, 0, 0);
    for (id, value) in params {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn put_settings_ack(out: &mut Vec<u8>) {
    put_head(out, 0, SETTINGS, FLAG_ACK, 0);
}

pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_head(out, 4, WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&(increment & MAX_WINDOW).to_be_bytes());
}

pub fn put_ping(out: &mut Vec<u8>, ack: bool, payload: [u8; 8]) {
    put_head(out, 8, PING, if ack { FLAG_ACK } else { 0 }, 0);
    out.extend_from_slice(&payload);
}

pub fn put_rst(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_head(out, 4, RST_STREAM, 0, stream);
    out.extend_from_slice(&reason.0.to_be_bytes());
}

pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason) {
    put_head(out, 8, GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream & MAX_WINDOW).to_be_bytes());
    out.extend_from_slice(&reason.0.to_be_bytes());
}

/// A header field to encode: a pseudo-header (`:method`, `:authority`,
/// `:status`) by its static-table index, or any other by name.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    /// A static-table name index (RFC 7541 Appendix A) and a value.
    Indexed(u8, &'a [u8]),
    /// A name and a value.
    Named(&'a [u8], &'a [u8]),
}

/// Static-table name indexes used by HBONE.
pub const NAME_AUTHORITY: u8 = 1;
pub const NAME_METHOD: u8 = 2;
pub const NAME_STATUS: u8 = 8;

/// Appends the HPACK encoding of `fields`: every field a literal without
/// indexing (RFC 7541 §6.2.2), strings without Huffman coding.
pub fn encode_headers<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = Field<'a>>) {
    for field in fields {
        match field {
            Field::Indexed(index, value) => {
                put_int(out, 0x00, 4, usize::from(index));
                put_str(out, value);
            }
            Field::Named(name, value) => {
                out.push(0x00);
                put_str(out, name);
                put_str(out, value);
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// HPACK integer encoding (RFC 7541 §5.1) with an `n`-bit prefix below `first`'s flag bits.
fn put_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<Frame, FrameError> {
        let head = Head {
            len: payload.len() as u32,
            kind,
            flags,
            stream,
        };
        assert_eq!(Head::parse(&head.encode()), head);
        parse(&head, payload)
    }

    #[test]
    fn head_round_trips_and_clears_the_reserved_bit() {
        let mut b = Head {
            len: 0x12_3456,
            kind: 7,
            flags: 0x25,
            stream: 0x7fff_ffff,
        }
        .encode();
        b[5] |= 0x80;
        let h = Head::parse(&b);
        assert_eq!(
            (h.len, h.kind, h.flags, h.stream),
            (0x12_3456, 7, 0x25, 0x7fff_ffff)
        );
    }

    #[test]
    fn padded_data_is_unpadded_and_bad_padding_refused() {
        let f = frame(
            DATA,
            FLAG_PADDED | FLAG_END_STREAM,
            1,
            &[2, b'h', b'i', 0, 0],
        )
        .unwrap();
        assert_eq!(
            f,
            Frame::Data {
                stream: 1,
                end_stream: true,
                data: 1..3
            }
        );
        assert!(matches!(
            frame(DATA, FLAG_PADDED, 1, &[5, 0, 0]),
            Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))
        ));
        assert!(frame(DATA, FLAG_PADDED, 1, &[]).is_err());
        assert!(frame(DATA, 0, 0, b"x").is_err());
    }

    #[test]
    fn headers_with_priority_skip_it() {
        let f = frame(
            HEADERS,
            FLAG_PRIORITY | FLAG_END_HEADERS,
            3,
            &[0, 0, 0, 1, 16, 0x82],
        )
        .unwrap();
        assert_eq!(
            f,
            Frame::Headers {
                stream: 3,
                end_stream: false,
                end_headers: true,
                block: 5..6
            }
        );
        assert_eq!(
            frame(HEADERS, FLAG_PRIORITY, 3, &[0, 0, 0, 3, 16]),
            Err(FrameError::Stream(3, Reason::PROTOCOL_ERROR))
        );
        assert!(frame(HEADERS, FLAG_PRIORITY, 3, &[0, 0]).is_err());
    }

    #[test]
    fn control_frames_check_their_sizes() {
        assert!(frame(PING, 0, 0, &[0; 7]).is_err());
        assert!(frame(PING, 0, 1, &[0; 8]).is_err());
        assert!(frame(RST_STREAM, 0, 1, &[0; 3]).is_err());
        assert!(frame(SETTINGS, 0, 0, &[0; 5]).is_err());
        assert!(frame(SETTINGS, FLAG_ACK, 0, &[0; 6]).is_err());
        assert!(frame(GOAWAY, 0, 0, &[0; 7]).is_err());
        assert!(frame(WINDOW_UPDATE, 0, 0, &[0; 4]).is_err());
        assert_eq!(
            frame(WINDOW_UPDATE, 0, 5, &[0; 4]),
            Err(FrameError::Stream(5, Reason::PROTOCOL_ERROR))
        );
        assert_eq!(
            frame(GOAWAY, 0, 0, &[0x80, 0, 0, 9, 0, 0, 0, 2, b'x']).unwrap(),
            Frame::GoAway {
                last_stream: 9,
                reason: Reason::INTERNAL_ERROR
            }
        );
        assert_eq!(frame(0xfa, 0, 0, b"whatever").unwrap(), Frame::Unknown);
    }

    #[test]
    fn settings_values_are_range_checked() {
        let one = |id: u16, v: u32| {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&v.to_be_bytes());
            frame(SETTINGS, 0, 0, &p)
        };
        assert!(one(SETTINGS_ENABLE_PUSH, 2).is_err());
        assert!(one(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31).is_err());
        assert!(one(SETTINGS_MAX_FRAME_SIZE, 16_383).is_err());
        assert!(one(SETTINGS_MAX_FRAME_SIZE, 1 << 24).is_err());
        assert!(one(SETTINGS_MAX_FRAME_SIZE, 1 << 20).is_ok());
        assert!(one(0x99, 12345).is_ok());
    }

    #[test]
    fn encoded_headers_decode_with_a_standard_decoder() {
        let long = vec![b'v'; 300];
        let mut out = Vec::new();
        encode_headers(
            &mut out,
            [
                Field::Indexed(NAME_METHOD, b"CONNECT"),
                Field::Indexed(NAME_AUTHORITY, b"10.0.0.1:8080"),
                Field::Named(b"baggage", &long),
            ],
        );
        let mut decoded = Vec::new();
        loona_hpack::Decoder::new()
            .decode_with_cb(&out, |n, v| decoded.push((n.into_owned(), v.into_owned())))
            .unwrap();
        assert_eq!(
            decoded,
            vec![
                (b":method".to_vec(), b"CONNECT".to_vec()),
                (b":authority".to_vec(), b"10.0.0.1:8080".to_vec()),
                (b"baggage".to_vec(), long),
            ]
        );
    }
}
