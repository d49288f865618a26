//! weir-bundle: the signed bundle, the unit weir carries across the diode.
//!
//! A bundle is one POSIX ustar archive that stock `tar tvf` lists, with
//! exactly one encoding: every byte of the file follows from the signed
//! manifest and the artifacts' contents (see `docs/BUNDLE.md`).
//!
//! ```text
//!  manifest.json                    names, versions, labels, and every file
//!                                   with its size, BLAKE3 and mode
//!  signatures/<KEY-ID>.minisig      one per signer, sorted by key id:
//!  signatures/<KEY-ID>.minisig      minisign (prehashed Ed25519) over the
//!                                   exact manifest bytes
//!  payload/...                      the artifacts, in manifest order
//!  sbom/...                         CycloneDX or SPDX files, as given
//!  two zero blocks                  and nothing after them
//! ```
//!
//! An auditor can check any signature with the stock tool:
//! `minisign -Vm manifest.json -x signatures/<KEY-ID>.minisig -p key.pub`.
//!
//! The crate does no I/O but for the thin [`read`] drivers: verification
//! is a push parser fed bytes in any pieces ([`BundleVerifier::feed`]).
//!
//! - [`ustar`]: the one header each entry may have.
//! - [`manifest`]: the manifest and its rules.
//! - [`path`]: what an entry may be called.
//! - [`signature`]: one signature: its form, and checking it.
//! - [`trust`]: the trust store of public keys.
//! - [`verify`](mod@verify): the push parser that verifies a bundle.
//! - [`write`](mod@write): writing the canonical layout.
//! - [`read`]: feeding the verifier from a reader.
//! - [`excerpt`]: bounded strings for reasons and logs.

#![forbid(unsafe_code)]

pub mod excerpt;
pub mod manifest;
pub mod path;
pub mod read;
pub mod signature;
pub mod trust;
pub mod ustar;
pub mod verify;
pub mod write;

pub use excerpt::{Excerpt, MAX_EXCERPT};
pub use manifest::{Artifact, FORMAT, Manifest, ManifestError, Mode, Sbom, SbomFormat};
pub use read::{inspect, verify};
pub use signature::{SignatureProblem, Signer, UNTRUSTED_COMMENT};
pub use trust::{KeyId, KeyStatus, TrustError, TrustStore, TrustedKey};
pub use verify::{
    BundleInfo, BundleInspector, BundleVerifier, Digested, Inspection, MAX_REASONS, Progress,
    Reason, Rejection, Verified,
};
pub use write::{BundleWriter, MANIFEST_PATH, SIGNATURES_DIR, WriteError, signature_path};
