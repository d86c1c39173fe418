//! The HTTP/2 frames an HBONE server or client reads from its peer: the frame
//! header, every frame type's payload rules, and header blocks through HPACK
//! and the pseudo-header checks. Properties: no input panics; a frame that
//! parses has ranges inside its payload; what we encode decodes back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zs_hbone::frame::{self, Field, Frame, Head};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut blocks: Vec<&[u8]> = Vec::new();
    while rest.len() >= frame::HEADER_LEN {
        let head = Head::parse(rest[..frame::HEADER_LEN].try_into().unwrap());
        assert_eq!(Head::parse(&head.encode()), head);
        rest = &rest[frame::HEADER_LEN..];
        let len = (head.len as usize).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        rest = tail;
        let head = Head { len: len as u32, ..head };
        match frame::parse(&head, payload) {
            Ok(Frame::Data { data, .. }) => assert!(data.end <= payload.len() && data.start <= data.end),
            Ok(Frame::Headers { block, .. }) | Ok(Frame::Continuation { block, .. }) => {
                assert!(block.end <= payload.len() && block.start <= block.end);
                blocks.push(&payload[block]);
            }
            Ok(Frame::Settings { ack: false }) => {
                let _ = frame::settings(payload).count();
            }
            _ => {}
        }
    }
    let _ = zs_hbone::fuzzing::header_blocks(blocks.iter().copied(), true);
    let _ = zs_hbone::fuzzing::header_blocks(blocks.iter().copied(), false);

    // Encoding: arbitrary name/value bytes come back unchanged.
    let (name, value) = data.split_at(data.len() / 2);
    let mut block = Vec::new();
    frame::encode_headers(&mut block, [Field::Named(name, value), Field::Indexed(frame::NAME_AUTHORITY, value)]);
    let mut decoded = Vec::new();
    loona_hpack::Decoder::new()
        .decode_with_cb(&block, |n, v| decoded.push((n.into_owned(), v.into_owned())))
        .expect("our encoding decodes");
    assert_eq!(decoded, vec![(name.to_vec(), value.to_vec()), (b":authority".to_vec(), value.to_vec())]);
});
