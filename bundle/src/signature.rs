//! Checking one minisign signature over a manifest against the trust store.
//!
//! A signature counts only if: it parses; it is prehashed Ed25519 (minisign's
//! default, `ED`); the file it came in is named after its key id; that key
//! is in the trust store, not revoked and not expired; the signature and
//! its global signature over the trusted comment verify; and the trusted
//! comment names the manifest's bundle, version and creation time.

use std::time::SystemTime;

use base64::Engine as _;

use crate::manifest::Manifest;
use crate::trust::{KeyId, KeyStatus, TrustStore};

/// Largest signature file accepted, in bytes.
pub const MAX_SIGNATURE: u64 = 4096;
/// The untrusted comment of every signature file: stock `minisign -S`
/// writes it when given no `-c`, and nothing in a signature file is free
/// text.
pub const UNTRUSTED_COMMENT: &str = "signature from minisign secret key";
/// Most signatures one bundle may carry.
pub const MAX_SIGNATURES: usize = 64;

/// A trusted key whose signature over the manifest verified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    /// The key's id in the trust store.
    pub id: String,
    /// Who holds the key.
    pub name: String,
    /// What the key vouches for.
    pub roles: Vec<String>,
    /// The minisign key id.
    #[serde(serialize_with = "display")]
    pub key_id: KeyId,
}

fn display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Why one signature does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    /// Not a minisign signature.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Legacy (not prehashed) signature.
    #[error("not a prehashed (ED) signature")]
    Legacy,
    /// The file name does not match the key id inside.
    #[error("file is named for key {file} but was made by key {inside}")]
    NameMismatch {
        /// From the file name.
        file: String,
        /// From the signature.
        inside: KeyId,
    },
    /// No trusted key has this id.
    #[error("key {0} is not in the trust store")]
    Untrusted(KeyId),
    /// The key was revoked.
    #[error("key {key_id} ({id}) is revoked")]
    Revoked {
        /// Trust store id.
        id: String,
        /// minisign key id.
        key_id: KeyId,
    },
    /// The key is past its `not_after`.
    #[error("key {key_id} ({id}) has expired")]
    Expired {
        /// Trust store id.
        id: String,
        /// minisign key id.
        key_id: KeyId,
    },
    /// The signature does not verify: forged, or the manifest was changed.
    #[error("signature by key {key_id} ({id}) does not verify")]
    Bad {
        /// Trust store id.
        id: String,
        /// minisign key id.
        key_id: KeyId,
    },
    /// Verifies, but the trusted comment names another bundle.
    #[error("trusted comment {comment:?} does not match the manifest")]
    Comment {
        /// What the signature's trusted comment says.
        comment: String,
    },
}

/// Checks that a signature file has the one form a bundle allows:
///
/// ```text
///  untrusted comment: signature from minisign secret key⏎
///  <base64 of "ED" ‖ key id ‖ signature: 74 bytes, padded>⏎
///  trusted comment: <any text, checked against the manifest later>⏎
///  <base64 of the global signature: 64 bytes, padded>⏎
/// ```
///
/// Line ends are LF, nothing follows the last one, and each base64 line is
/// the one encoding of its bytes. On failure, returns the part that
/// differs.
pub fn check_form(text: &str) -> Result<(), &'static str> {
    let body = text.strip_suffix('\n').ok_or("final line end")?;
    if body.contains('\r') {
        return Err("line ends");
    }
    let lines: Vec<&str> = body.split('\n').collect();
    let [untrusted, sig, trusted, global] = lines.as_slice() else {
        return Err("line count");
    };
    if untrusted.strip_prefix("untrusted comment: ") != Some(UNTRUSTED_COMMENT) {
        return Err("untrusted comment");
    }
    if !trusted.starts_with("trusted comment: ") {
        return Err("trusted comment line");
    }
    for (line, len, part) in [
        (sig, 74, "signature line"),
        (global, 64, "global signature line"),
    ] {
        let b64 = base64::engine::general_purpose::STANDARD;
        let ok = b64
            .decode(line)
            .is_ok_and(|raw| raw.len() == len && b64.encode(&raw) == **line);
        if !ok {
            return Err(part);
        }
    }
    Ok(())
}

/// The key id a minisign signature text names (line 2: `ED` ‖ key id ‖ sig).
pub fn signature_key_id(text: &str) -> Result<KeyId, SignatureProblem> {
    let line = text
        .lines()
        .nth(1)
        .ok_or_else(|| SignatureProblem::Malformed("fewer than 2 lines".into()))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|e| SignatureProblem::Malformed(e.to_string()))?;
    if raw.len() != 74 {
        return Err(SignatureProblem::Malformed(format!(
            "signature line of {} bytes",
            raw.len()
        )));
    }
    if raw.get(..2) != Some(b"ED") {
        return Err(SignatureProblem::Legacy);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(raw.get(2..10).unwrap_or(&[0; 8]));
    Ok(KeyId(id))
}

/// What every signature of a bundle must say, counted or not, and what the
/// writer holds its signatures to: it was made by `file_key`, the key its
/// file is named for, and its trusted comment names this bundle (it is not
/// free text either). Returns the decoded signature.
pub fn check_vouches(
    text: &str,
    file_key: KeyId,
    manifest: &Manifest,
) -> Result<minisign_verify::Signature, SignatureProblem> {
    let inside = signature_key_id(text)?;
    if inside != file_key {
        return Err(SignatureProblem::NameMismatch {
            file: file_key.to_string(),
            inside,
        });
    }
    let sig = minisign_verify::Signature::decode(text)
        .map_err(|e| SignatureProblem::Malformed(e.to_string()))?;
    if sig.trusted_comment() != manifest.trusted_comment() {
        return Err(SignatureProblem::Comment {
            comment: sig.trusted_comment().to_owned(),
        });
    }
    Ok(sig)
}

/// Checks one signature file, named for key `key_id`, over
/// `manifest_bytes`.
pub fn check_signature(
    store: &TrustStore,
    manifest_bytes: &[u8],
    manifest: &Manifest,
    key_id: KeyId,
    text: &str,
    now: SystemTime,
) -> Result<Signer, SignatureProblem> {
    let sig = check_vouches(text, key_id, manifest)?;
    let key = store
        .by_key_id(key_id)
        .ok_or(SignatureProblem::Untrusted(key_id))?;
    let id = key.id.clone();
    match key.status(now) {
        KeyStatus::Usable => {}
        KeyStatus::Revoked => return Err(SignatureProblem::Revoked { id, key_id }),
        KeyStatus::Expired => return Err(SignatureProblem::Expired { id, key_id }),
    }
    let pk = minisign_verify::PublicKey::from_base64(&key.public_key).map_err(|_| {
        SignatureProblem::Bad {
            id: id.clone(),
            key_id,
        }
    })?;
    pk.verify(manifest_bytes, &sig, false)
        .map_err(|_| SignatureProblem::Bad {
            id: id.clone(),
            key_id,
        })?;
    Ok(Signer {
        id,
        name: key.name.clone(),
        roles: key.roles.clone(),
        key_id,
    })
}
