//! `manifest.json`: what a bundle holds, signed byte for byte.
//!
//! ```json
//! {
//!   "format": "weir-bundle/1",
//!   "name": "app",
//!   "version": "1.2.3",
//!   "created": "2026-11-26T12:00:00Z",
//!   "labels": { "channel": "stable" },
//!   "artifacts": [
//!     { "path": "payload/app.tar", "size": 1234, "blake3": "<64 hex>", "mode": "0644" }
//!   ],
//!   "sboms": [
//!     { "path": "sbom/app.cdx.json", "size": 99, "blake3": "<64 hex>", "format": "cyclonedx" }
//!   ]
//! }
//! ```
//!
//! The manifest is parsed from the exact bytes the signatures cover, with
//! unknown fields refused, and then checked as a whole ([`Manifest::check`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::path::{PathProblem, check_str, fold_case};

/// The `format` value of this version.
pub const FORMAT: &str = "weir-bundle/1";
/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST: u64 = 1 << 20;
/// Most entries (artifacts and SBOMs) one bundle may list.
pub const MAX_ENTRIES: usize = 100_000;
/// Most labels.
pub const MAX_LABELS: usize = 64;
/// Longest name, version, label key or label value.
pub const MAX_FIELD: usize = 128;
/// Largest file a bundle carries: what 11 octal digits of a ustar `size`
/// field hold (8 GiB − 1).
pub const MAX_ENTRY_SIZE: u64 = crate::ustar::MAX_OCTAL_11;

/// File mode of an artifact: only these two exist in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Readable data.
    #[serde(rename = "0644")]
    Regular,
    /// An executable.
    #[serde(rename = "0755")]
    Executable,
}

impl Mode {
    /// The permission bits.
    pub fn bits(self) -> u32 {
        match self {
            Self::Regular => 0o644,
            Self::Executable => 0o755,
        }
    }

    /// The mode for a file whose permission bits are `bits`.
    pub fn from_bits(bits: u32) -> Self {
        if bits & 0o111 != 0 {
            Self::Executable
        } else {
            Self::Regular
        }
    }
}

/// Which standard an SBOM follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SbomFormat {
    /// OWASP CycloneDX (JSON or XML).
    Cyclonedx,
    /// Linux Foundation SPDX (JSON or tag-value).
    Spdx,
}

impl SbomFormat {
    /// Recognises an SBOM from its first bytes, or `None`.
    pub fn sniff(head: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(head);
        if text.contains("\"bomFormat\"") && text.contains("CycloneDX")
            || text.contains("http://cyclonedx.org/schema/bom")
        {
            Some(Self::Cyclonedx)
        } else if text.contains("\"spdxVersion\"") || text.contains("SPDXVersion:") {
            Some(Self::Spdx)
        } else {
            None
        }
    }
}

/// One artifact file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Archive path, under `payload/`.
    pub path: String,
    /// Exact length in bytes.
    pub size: u64,
    /// BLAKE3 of the content, lowercase hex.
    pub blake3: String,
    /// 0644 or 0755.
    pub mode: Mode,
}

/// One SBOM file of the bundle, carried as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sbom {
    /// Archive path, under `sbom/`.
    pub path: String,
    /// Exact length in bytes.
    pub size: u64,
    /// BLAKE3 of the content, lowercase hex.
    pub blake3: String,
    /// Which standard it follows.
    pub format: SbomFormat,
}

/// The signed description of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`]; also separates weir manifests from anything else
    /// a key might sign.
    pub format: String,
    /// Bundle name.
    pub name: String,
    /// Bundle version.
    pub version: String,
    /// Creation time, RFC 3339, UTC, whole seconds.
    pub created: String,
    /// Free-form key=value labels.
    #[serde(default, deserialize_with = "unique_labels")]
    pub labels: BTreeMap<String, String>,
    /// Payload files.
    pub artifacts: Vec<Artifact>,
    /// SBOM files.
    #[serde(default)]
    pub sboms: Vec<Sbom>,
}

/// Labels with every key once: JSON allows a key twice, and two readers
/// that kept different copies would see different labels under one
/// signature.
fn unique_labels<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of string labels, each key once")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if out.len() >= MAX_LABELS {
                    return Err(serde::de::Error::custom("too many labels"));
                }
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom("a label key appears twice"));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique)
}

/// A reference to any manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Archive path.
    pub path: &'a str,
    /// Exact length.
    pub size: u64,
    /// BLAKE3, lowercase hex.
    pub blake3: &'a str,
    /// Permission bits.
    pub mode: Mode,
}

/// Why a manifest is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("not a valid manifest: {0}")]
    Json(String),
    /// `format` is not [`FORMAT`].
    #[error("unsupported manifest format {0:?}")]
    Format(String),
    /// Name, version or a label is empty, too long or has odd characters.
    #[error(
        "{field} {value:?} is not allowed (1..={MAX_FIELD} of [A-Za-z0-9._+-], not starting with . or -)"
    )]
    Field {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// `created` is not an RFC 3339 UTC time.
    #[error("created time {0:?} is not RFC 3339")]
    Created(String),
    /// Too many entries or labels.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// The manifest lists no artifact.
    #[error("the manifest lists no artifact")]
    Empty,
    /// A path is not a bundle path.
    #[error("path {path:?} is {problem}")]
    Path {
        /// The path.
        path: String,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// An artifact outside `payload/` or an SBOM outside `sbom/`.
    #[error("path {0:?} is outside its directory")]
    Prefix(String),
    /// Two entries with the same path, or paths equal but for case, or a
    /// path that is also a directory of another.
    #[error("paths {0:?} and {1:?} collide")]
    Collision(String, String),
    /// A hash that is not 64 lowercase hex digits.
    #[error("hash of {0:?} is not 64 lowercase hex digits")]
    Hash(String),
    /// A file larger than a ustar header can describe.
    #[error("{0:?} is larger than 8 GiB - 1 bytes, the most a ustar header holds")]
    TooLarge(String),
}

fn field_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_FIELD
        && !s.starts_with('.')
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
}

fn hex_ok(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// Parses and checks the exact signed bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Self =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// The canonical bytes weir writes and signs: pretty JSON, one trailing
    /// newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Every entry, artifacts first.
    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.artifacts
            .iter()
            .map(|a| EntryRef {
                path: &a.path,
                size: a.size,
                blake3: &a.blake3,
                mode: a.mode,
            })
            .chain(self.sboms.iter().map(|s| EntryRef {
                path: &s.path,
                size: s.size,
                blake3: &s.blake3,
                mode: Mode::Regular,
            }))
    }

    /// How many entries the manifest lists.
    pub fn entry_count(&self) -> usize {
        self.artifacts.len() + self.sboms.len()
    }

    /// Entry `i` in archive order (artifacts, then SBOMs).
    pub fn entry(&self, i: usize) -> Option<EntryRef<'_>> {
        match self.artifacts.get(i) {
            Some(a) => Some(EntryRef {
                path: &a.path,
                size: a.size,
                blake3: &a.blake3,
                mode: a.mode,
            }),
            None => self
                .sboms
                .get(i.checked_sub(self.artifacts.len())?)
                .map(|s| EntryRef {
                    path: &s.path,
                    size: s.size,
                    blake3: &s.blake3,
                    mode: Mode::Regular,
                }),
        }
    }

    /// `created` in seconds since the epoch: every header's mtime.
    pub fn created_secs(&self) -> Option<u64> {
        let t = humantime::parse_rfc3339(&self.created).ok()?;
        let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        (secs <= crate::ustar::MAX_OCTAL_11).then_some(secs)
    }

    /// The comment every weir signature's trusted comment must carry, so
    /// that an auditor reading `minisign -V` output sees what was signed.
    pub fn trusted_comment(&self) -> String {
        format!(
            "weir-bundle name={} version={} created={}",
            self.name, self.version, self.created
        )
    }

    /// Checks every rule of the format.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(ManifestError::Format(self.format.clone()));
        }
        for (field, value) in [("name", &self.name), ("version", &self.version)] {
            if !field_ok(value) {
                return Err(ManifestError::Field {
                    field,
                    value: value.clone(),
                });
            }
        }
        let created_ok = self.created.ends_with('Z') && self.created_secs().is_some();
        if !created_ok {
            return Err(ManifestError::Created(self.created.clone()));
        }
        if self.labels.len() > MAX_LABELS {
            return Err(ManifestError::TooMany("labels"));
        }
        for (k, v) in &self.labels {
            if !field_ok(k) {
                return Err(ManifestError::Field {
                    field: "label key",
                    value: k.clone(),
                });
            }
            if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                return Err(ManifestError::Field {
                    field: "label value",
                    value: v.clone(),
                });
            }
        }
        if self.artifacts.is_empty() {
            return Err(ManifestError::Empty);
        }
        if self.artifacts.len() + self.sboms.len() > MAX_ENTRIES {
            return Err(ManifestError::TooMany("entries"));
        }
        let mut folded: HashMap<String, &str> = HashMap::new();
        let mut dirs: HashSet<String> = HashSet::new();
        let entries = self
            .artifacts
            .iter()
            .map(|a| (&a.path, a.size, &a.blake3, "payload/"))
            .chain(
                self.sboms
                    .iter()
                    .map(|s| (&s.path, s.size, &s.blake3, "sbom/")),
            );
        for (path, size, hash, prefix) in entries {
            check_str(path).map_err(|problem| ManifestError::Path {
                path: path.clone(),
                problem,
            })?;
            if !path.starts_with(prefix) || path.len() == prefix.len() {
                return Err(ManifestError::Prefix(path.clone()));
            }
            if !hex_ok(hash) {
                return Err(ManifestError::Hash(path.clone()));
            }
            if size > MAX_ENTRY_SIZE {
                return Err(ManifestError::TooLarge(path.clone()));
            }
            let f = fold_case(path);
            let mut at = 0;
            while let Some(i) = f.get(at..).and_then(|rest| rest.find('/')) {
                dirs.insert(f.get(..at + i).unwrap_or_default().to_owned());
                at += i + 1;
            }
            if let Some(first) = folded.insert(f, path) {
                return Err(ManifestError::Collision(first.to_owned(), path.clone()));
            }
        }
        // A file may not also be the directory of another file.
        if let Some((_, path)) = folded.iter().find(|(f, _)| dirs.contains(*f)) {
            return Err(ManifestError::Collision(
                (*path).to_owned(),
                format!("{path}/..."),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            name: "app".into(),
            version: "1.2.3".into(),
            created: "2026-11-26T12:00:00Z".into(),
            labels: BTreeMap::from([("channel".into(), "stable".into())]),
            artifacts: vec![Artifact {
                path: "payload/app.tar".into(),
                size: 3,
                blake3: blake3::hash(b"abc").to_hex().to_string(),
                mode: Mode::Regular,
            }],
            sboms: vec![],
        }
    }

    #[test]
    fn round_trips_through_its_canonical_bytes() {
        let m = sample();
        let bytes = m.to_bytes();
        assert!(bytes.starts_with(b"{\n  \"format\": \"weir-bundle/1\""));
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
        assert_eq!(
            m.trusted_comment(),
            "weir-bundle name=app version=1.2.3 created=2026-11-26T12:00:00Z"
        );
    }

    #[test]
    fn every_rule_is_enforced() {
        let bad = |f: &dyn Fn(&mut Manifest)| {
            let mut m = sample();
            f(&mut m);
            m.check().unwrap_err()
        };
        assert!(matches!(
            bad(&|m| m.format = "x".into()),
            ManifestError::Format(_)
        ));
        assert!(matches!(
            bad(&|m| m.name = "../x".into()),
            ManifestError::Field { .. }
        ));
        assert!(matches!(
            bad(&|m| m.version = String::new()),
            ManifestError::Field { .. }
        ));
        assert!(matches!(
            bad(&|m| m.created = "yesterday".into()),
            ManifestError::Created(_)
        ));
        assert!(matches!(
            bad(&|m| m.artifacts.clear()),
            ManifestError::Empty
        ));
        assert!(matches!(
            bad(&|m| m.artifacts[0].path = "payload/../x".into()),
            ManifestError::Path {
                problem: PathProblem::DotDot,
                ..
            }
        ));
        assert!(matches!(
            bad(&|m| m.artifacts[0].path = "other/x".into()),
            ManifestError::Prefix(_)
        ));
        assert!(matches!(
            bad(&|m| m.artifacts[0].blake3 = "AB".into()),
            ManifestError::Hash(_)
        ));
        assert!(matches!(
            bad(&|m| m.artifacts[0].size = MAX_ENTRY_SIZE + 1),
            ManifestError::TooLarge(_)
        ));
        assert!(matches!(
            bad(&|m| m.created = "2300-01-01T00:00:00Z".into()),
            ManifestError::Created(_)
        ));
        assert!(matches!(
            bad(&|m| m.artifacts[0].path = format!("payload/{}", "a".repeat(101))),
            ManifestError::Path {
                problem: PathProblem::NoSplit,
                ..
            }
        ));
        assert!(matches!(
            bad(&|m| {
                let mut twin = m.artifacts[0].clone();
                twin.path = "payload/APP.tar".into();
                m.artifacts.push(twin);
            }),
            ManifestError::Collision(..)
        ));
        assert!(matches!(
            bad(&|m| {
                let mut child = m.artifacts[0].clone();
                child.path = "payload/app.tar/inner".into();
                m.artifacts.push(child);
            }),
            ManifestError::Collision(..)
        ));
    }

    #[test]
    fn a_label_key_twice_is_refused() {
        let text = String::from_utf8(sample().to_bytes()).unwrap().replace(
            "\"channel\": \"stable\"",
            "\"channel\": \"stable\", \"channel\": \"beta\"",
        );
        assert!(text.contains("beta"));
        assert!(matches!(
            Manifest::from_bytes(text.as_bytes()),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(matches!(
            Manifest::from_bytes(&serde_json::to_vec(&v).unwrap()),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn sboms_are_recognised() {
        assert_eq!(
            SbomFormat::sniff(br#"{"bomFormat": "CycloneDX", "specVersion": "1.5"}"#),
            Some(SbomFormat::Cyclonedx)
        );
        assert_eq!(
            SbomFormat::sniff(br#"{"spdxVersion": "SPDX-2.3"}"#),
            Some(SbomFormat::Spdx)
        );
        assert_eq!(
            SbomFormat::sniff(b"SPDXVersion: SPDX-2.3\n"),
            Some(SbomFormat::Spdx)
        );
        assert_eq!(SbomFormat::sniff(b"hello"), None);
    }
}
