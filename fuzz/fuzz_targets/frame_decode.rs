//! Arbitrary datagrams through the frame decoder, keyed and unkeyed: never
//! a panic, and whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_protocol::wire::{decode_frame, encode_frame};
use weir_protocol::{Integrity, LinkKey};

fuzz_target!(|data: &[u8]| {
    let keyed = Integrity::Mac(LinkKey::from_secret(&[7; 32]));
    for integrity in [Integrity::Crc32c, keyed] {
        if let Ok(frame) = decode_frame(data, &integrity) {
            let mut again = Vec::new();
            encode_frame(&frame.header, frame.payload, &integrity, &mut again)
                .expect("a decoded payload fits a frame");
            assert_eq!(again, data, "decode then encode must be the identity");
        }
    }
    let _ = weir_protocol::Heartbeat::decode(data);
    let _ = weir_protocol::EndOfPass::decode(data);
});
