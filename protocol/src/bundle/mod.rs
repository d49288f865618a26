//! Signed bundles: the unit weir carries across the diode.
//!
//! A bundle is one plain POSIX tar file that stock `tar tvf` lists:
//!
//! ```text
//!  manifest.json                    names, versions, labels, and every file
//!                                   with its size, BLAKE3 and mode
//!  signatures/<KEY-ID>.minisig      one per signer: minisign (prehashed
//!  signatures/<KEY-ID>.minisig      Ed25519) over the exact manifest bytes
//!  payload/...                      the artifacts
//!  sbom/...                         CycloneDX or SPDX files, as given
//! ```
//!
//! An auditor can check any signature with the stock tool:
//! `minisign -Vm manifest.json -x signatures/<KEY-ID>.minisig -p key.pub`.
//!
//! - [`hashing`]: hashing a bundle while it is read for verification.
//! - [`lend`]: readers that let verification hash bytes where they lie.
//! - [`manifest`]: the manifest and its rules.
//! - [`path`]: what an entry may be called.
//! - [`trust`]: the trust store of public keys.
//! - [`signature`]: checking one signature.
//! - [`verify`](mod@verify): streaming verification of a whole bundle.
//! - [`write`](mod@write): writing the archive.

pub mod hashing;
pub mod lend;
pub mod manifest;
pub mod path;
pub mod signature;
pub mod trust;
pub mod verify;
pub mod write;

pub use hashing::HashingReader;
pub use lend::{Copying, Lend};
pub use manifest::{Artifact, FORMAT, Manifest, ManifestError, Mode, Sbom, SbomFormat};
pub use signature::{SignatureProblem, Signer};
pub use trust::{KeyId, KeyStatus, TrustError, TrustStore, TrustedKey};
pub use verify::{
    BundleInfo, Digested, Inspection, Reason, Rejection, Verified, inspect, verify, verify_digest,
    verify_digest_lent,
};
pub use write::{BundleWriter, MANIFEST_PATH, SIGNATURES_DIR, signature_path};
