//! The thin drivers that feed a verifier from a [`Read`]: what the CLI
//! and the sender use on a bundle file.

use std::io::{self, Read};
use std::time::SystemTime;

use crate::trust::TrustStore;
use crate::verify::{BundleInspector, BundleVerifier, Digested, Inspection, Progress, Rejection};

/// Read size.
const CHUNK: usize = 256 << 10;

/// Verifies the bundle `reader` holds against `trust` at `now`, reading it
/// to its end (a rejected bundle still has a digest). `Err` is an error of
/// `reader` itself, never a property of the bundle.
pub fn verify<R: Read>(mut reader: R, trust: &TrustStore, now: SystemTime) -> io::Result<Digested> {
    let mut v = BundleVerifier::new(trust, now);
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                v.feed(buf.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(v.finish())
}

/// Reads the structure, manifest and signature entries of the bundle
/// `reader` holds, without a trust store; stops reading at the first
/// problem.
pub fn inspect<R: Read>(mut reader: R) -> io::Result<Result<Inspection, Rejection>> {
    let mut v = BundleInspector::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if v.feed(buf.get(..n).unwrap_or_default()) == Progress::Rejected {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(v.finish())
}
