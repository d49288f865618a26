//! The trust store: the public keys whose signatures count, and for what.
//!
//! A TOML file, written by `weir-receiver trust add|revoke`, never by hand:
//!
//! ```toml
//! [[key]]
//! id = "ci-builder"
//! name = "Release builder, CI"
//! public_key = "RWQ..."          # minisign public key, base64
//! roles = ["build"]
//! not_after = "2027-12-31T00:00:00Z"   # optional
//! revoked = false
//! ```
//!
//! Signatures are matched to keys by the minisign key id they carry; a
//! signature from a key that is unknown, revoked or past `not_after` never
//! counts.

use std::time::SystemTime;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The 8-byte minisign key number that signatures name their key by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    /// As minisign prints it: the little-endian number in 16 hex digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl KeyId {
    /// Parses the 16 hex digits minisign prints (any case).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 {
            return None;
        }
        u64::from_str_radix(s, 16)
            .ok()
            .map(|n| Self(n.to_le_bytes()))
    }
}

/// Why a key, a key file or a trust store is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// Not a minisign Ed25519 public key.
    #[error("not a minisign public key: {0}")]
    PublicKey(String),
    /// The TOML does not parse or has unknown fields.
    #[error("trust store does not parse: {0}")]
    Toml(String),
    /// Two keys with one id.
    #[error("a key with id {0:?} already exists")]
    DuplicateId(String),
    /// One public key under two ids.
    #[error("this public key is already trusted as {0:?}")]
    DuplicateKey(String),
    /// An id, name or role that is empty, too long or has odd characters.
    #[error("{field} {value:?} is not allowed")]
    Field {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// `not_after` is not an RFC 3339 time.
    #[error("not_after {0:?} is not an RFC 3339 time")]
    NotAfter(String),
    /// No key with that id.
    #[error("no key with id {0:?}")]
    UnknownId(String),
}

/// Decodes a minisign public key (base64 of `Ed` ‖ key id ‖ 32-byte key).
pub fn public_key_id(b64: &str) -> Result<KeyId, TrustError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| TrustError::PublicKey(e.to_string()))?;
    match raw.as_slice() {
        [b'E', b'd', id @ .., _] if raw.len() == 42 => {
            let mut k = [0u8; 8];
            k.copy_from_slice(id.get(..8).unwrap_or(&[0; 8]));
            Ok(KeyId(k))
        }
        _ => Err(TrustError::PublicKey(
            "not an Ed25519 key of 42 bytes".into(),
        )),
    }
}

/// Takes the key line out of a minisign `.pub` file (comment lines skipped).
pub fn public_key_from_file_text(text: &str) -> Result<String, TrustError> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or_else(|| TrustError::PublicKey("no key line".into()))?;
    public_key_id(line)?;
    Ok(line.to_owned())
}

/// One trusted public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    /// The operator's name for the key, unique in the store.
    pub id: String,
    /// Who holds it.
    pub name: String,
    /// The minisign public key, base64.
    pub public_key: String,
    /// What its signatures vouch for (`build`, `approve`, ...).
    pub roles: Vec<String>,
    /// Signatures stop counting after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// Signatures of a revoked key never count.
    #[serde(default)]
    pub revoked: bool,
}

/// Whether a key's signatures count at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// They count.
    Usable,
    /// The key was revoked.
    Revoked,
    /// Past `not_after`.
    Expired,
}

impl TrustedKey {
    /// The minisign key id of this key.
    pub fn key_id(&self) -> Result<KeyId, TrustError> {
        public_key_id(&self.public_key)
    }

    /// Whether its signatures count at `now`.
    pub fn status(&self, now: SystemTime) -> KeyStatus {
        if self.revoked {
            return KeyStatus::Revoked;
        }
        match self.not_after.as_deref().map(humantime::parse_rfc3339) {
            Some(Ok(t)) if now > t => KeyStatus::Expired,
            // A not_after that does not parse was refused at load time.
            Some(Err(_)) => KeyStatus::Expired,
            _ => KeyStatus::Usable,
        }
    }

    fn check(&self) -> Result<(), TrustError> {
        let word = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !word(&self.id) {
            return Err(TrustError::Field {
                field: "id",
                value: self.id.clone(),
            });
        }
        if self.name.is_empty() || self.name.len() > 128 || self.name.chars().any(char::is_control)
        {
            return Err(TrustError::Field {
                field: "name",
                value: self.name.clone(),
            });
        }
        if self.roles.is_empty() || !self.roles.iter().all(|r| word(r)) {
            return Err(TrustError::Field {
                field: "roles",
                value: self.roles.join(","),
            });
        }
        if let Some(t) = &self.not_after
            && humantime::parse_rfc3339(t).is_err()
        {
            return Err(TrustError::NotAfter(t.clone()));
        }
        self.key_id().map(|_| ())
    }
}

/// Every trusted key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustStore {
    /// The keys, in the order they were added.
    #[serde(default, rename = "key")]
    pub keys: Vec<TrustedKey>,
}

impl TrustStore {
    /// Parses and checks a store.
    pub fn from_toml(text: &str) -> Result<Self, TrustError> {
        let raw: Self = toml::from_str(text).map_err(|e| TrustError::Toml(e.to_string()))?;
        let mut store = Self::default();
        for k in raw.keys {
            store.add(k)?;
        }
        Ok(store)
    }

    /// The store as TOML, with a header saying not to edit it by hand.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).unwrap_or_default();
        format!(
            "# weir trust store. Change it with `weir-receiver trust add|revoke`, not by hand.\n\n{body}"
        )
    }

    /// Adds a key, refusing a duplicate id or public key.
    pub fn add(&mut self, key: TrustedKey) -> Result<(), TrustError> {
        key.check()?;
        if self.keys.iter().any(|k| k.id == key.id) {
            return Err(TrustError::DuplicateId(key.id));
        }
        let kid = key.key_id()?;
        if let Some(k) = self.keys.iter().find(|k| k.key_id().ok() == Some(kid)) {
            return Err(TrustError::DuplicateKey(k.id.clone()));
        }
        self.keys.push(key);
        Ok(())
    }

    /// Marks a key revoked (it stays listed, so its history is readable).
    pub fn revoke(&mut self, id: &str) -> Result<(), TrustError> {
        let k = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| TrustError::UnknownId(id.to_owned()))?;
        k.revoked = true;
        Ok(())
    }

    /// The key whose minisign key id is `id`.
    pub fn by_key_id(&self, id: KeyId) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.key_id().ok() == Some(id))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A real minisign public key (made with `minisign -G`), for layout tests.
    pub(crate) const PUB: &str = "RWS0HjthARYamB4LGXmYWFsCpuYOMTEq/NfB9v+KazyH/MSbaPP4Af/P";

    fn key(id: &str) -> TrustedKey {
        TrustedKey {
            id: id.into(),
            name: "Builder".into(),
            public_key: PUB.into(),
            roles: vec!["build".into()],
            not_after: None,
            revoked: false,
        }
    }

    #[test]
    fn key_ids_print_like_minisign() {
        let id = public_key_id(PUB).unwrap();
        assert_eq!(id.to_string(), "981A1601613B1EB4");
        assert_eq!(KeyId::parse("981a1601613b1eb4"), Some(id));
        assert!(public_key_id("AAAA").is_err());
        let file = format!("untrusted comment: minisign public key 981A1601613B1EB4\n{PUB}\n");
        assert_eq!(public_key_from_file_text(&file).unwrap(), PUB);
    }

    #[test]
    fn store_round_trips_and_refuses_duplicates() {
        let mut s = TrustStore::default();
        s.add(key("a")).unwrap();
        assert_eq!(s.add(key("a")), Err(TrustError::DuplicateId("a".into())));
        assert_eq!(s.add(key("b")), Err(TrustError::DuplicateKey("a".into())));
        let text = s.to_toml();
        assert!(text.starts_with("# weir trust store"));
        assert_eq!(TrustStore::from_toml(&text).unwrap(), s);
        s.revoke("a").unwrap();
        assert_eq!(s.keys[0].status(SystemTime::now()), KeyStatus::Revoked);
        assert_eq!(s.revoke("zz"), Err(TrustError::UnknownId("zz".into())));
    }

    #[test]
    fn expiry_and_bad_fields() {
        let mut k = key("a");
        k.not_after = Some("2020-01-01T00:00:00Z".into());
        assert_eq!(k.status(SystemTime::now()), KeyStatus::Expired);
        k.not_after = Some("2999-01-01T00:00:00Z".into());
        assert_eq!(k.status(SystemTime::now()), KeyStatus::Usable);
        k.not_after = Some("soon".into());
        assert_eq!(k.check(), Err(TrustError::NotAfter("soon".into())));
        let mut k = key("bad id");
        assert!(matches!(
            k.check(),
            Err(TrustError::Field { field: "id", .. })
        ));
        k = key("a");
        k.roles.clear();
        assert!(matches!(
            k.check(),
            Err(TrustError::Field { field: "roles", .. })
        ));
        assert!(matches!(
            TrustStore::from_toml("[[key]]\nid = 1\n"),
            Err(TrustError::Toml(_))
        ));
    }
}
