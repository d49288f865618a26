//! Arbitrary bytes as a bundle: the reader never panics, and never
//! accepts a bundle whose signature it could not check (the trust store
//! here is empty, so every verification must fail).
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use weir_protocol::bundle::{TrustStore, inspect, verify};

fuzz_target!(|data: &[u8]| {
    let _ = inspect(data);
    assert!(verify(data, &TrustStore::default(), SystemTime::now()).is_err());
});
