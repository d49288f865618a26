//! Arbitrary bytes as a bundle: the reader never panics, and never
//! accepts a bundle whose signature it could not check (the trust store
//! here is empty, so every verification must fail). Verification with the
//! transfer digest gives the same verdict (also when the reader lends its
//! bytes), and the digest of every byte, fed whole or in two pieces.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use weir_protocol::bundle::{TrustStore, inspect, verify, verify_digest, verify_digest_lent};
use weir_protocol::digest::{Digester, digest};

fuzz_target!(|data: &[u8]| {
    let _ = inspect(data);
    let now = SystemTime::now();
    let alone = verify(data, &TrustStore::default(), now);
    assert!(alone.is_err());
    let both = verify_digest(data, &TrustStore::default(), now).expect("memory cannot fail");
    assert_eq!(both.verdict, alone);
    let whole = digest(data);
    assert_eq!(both.digest, whole);
    assert_eq!(both.len, data.len() as u64);
    let lent = verify_digest_lent(data, &TrustStore::default(), now).expect("memory cannot fail");
    assert_eq!(lent.verdict, alone);
    assert_eq!((lent.digest, lent.len), (whole, both.len));
    let cut = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut d = Digester::new();
    d.update(&data[..cut]);
    d.update(&data[cut..]);
    assert_eq!(d.finalize(), whole);
});
