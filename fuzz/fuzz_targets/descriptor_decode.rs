//! Arbitrary descriptor payloads: never a panic, and a descriptor that
//! decodes survives a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_protocol::TransferDescriptor;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = TransferDescriptor::from_bytes(data) {
        let again = TransferDescriptor::from_bytes(&d.to_bytes()).expect("re-encoded descriptor");
        assert_eq!(again, d);
        assert!(d.size <= weir_protocol::descriptor::MAX_TRANSFER_LEN);
    }
});
