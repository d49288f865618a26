//! Signing keys: made by `weir-sender keygen`, loaded for `bundle create`
//! and `bundle sign`.
//!
//! Keys are minisign key pairs. The secret key is stored unencrypted (CI
//! jobs sign unattended), so the file must be readable by its owner only:
//! it is created with mode 0600, and a key file with looser permissions is
//! refused when loaded.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox};
use weir_bundle::KeyId;
use weir_host::atomic::{Staged, dir_of};

/// Why a key could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file already exists; keys are never overwritten.
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// The secret key file is readable by others.
    #[error("{path} has mode {mode:04o}; a secret key must be 0600 (chmod 600 {path})")]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not an unencrypted minisign secret key.
    #[error("{path} is not a usable minisign secret key: {detail}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What minisign said.
        detail: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A loaded signing key.
pub struct SigningKey {
    /// The secret half.
    pub secret: SecretKey,
    /// The public half.
    pub public: PublicKey,
    /// Its minisign key id.
    pub id: KeyId,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish()
    }
}

fn key_id(public: &PublicKey) -> KeyId {
    let mut id = [0u8; 8];
    for (d, s) in id.iter_mut().zip(public.keynum()) {
        *d = *s;
    }
    KeyId(id)
}

/// Writes `PREFIX.key` (0600) and `PREFIX.pub`; refuses to overwrite either.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf, KeyId), KeyError> {
    let base = prefix.as_os_str().to_owned();
    let mut key_path = base.clone();
    key_path.push(".key");
    let mut pub_path = base;
    pub_path.push(".pub");
    let (key_path, pub_path) = (PathBuf::from(key_path), PathBuf::from(pub_path));
    for p in [&key_path, &pub_path] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    let fmt = |e: minisign::PError| KeyError::Format {
        path: key_path.clone(),
        detail: e.to_string(),
    };
    let KeyPair { pk, sk } = KeyPair::generate_unencrypted_keypair().map_err(fmt)?;
    let id = key_id(&pk);
    let sk_text = sk
        .to_box(Some(&format!("weir secret key {id}")))
        .map_err(fmt)?
        .into_string();
    let pk_text = pk.to_box().map_err(fmt)?.into_string();
    write_new(&key_path, sk_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, pk_text.as_bytes(), 0o644) {
        // Leave no half pair behind.
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, pub_path, id))
}

/// A new key file, whole or not at all: written beside `path` with `mode`,
/// fsynced, linked into place (never over an existing file).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let staged = Staged::create(&dir_of(path), path, mode).map_err(io(path))?;
    staged
        .file()
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io(path))?;
    staged.commit_new().map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_owned())
        } else {
            KeyError::Io {
                path: path.to_owned(),
                source: e,
            }
        }
    })
}

/// Loads an unencrypted secret key, refusing a file others can read.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(io(path))?;
    let fmt = |detail: String| KeyError::Format {
        path: path.to_owned(),
        detail,
    };
    let sk_box = SecretKeyBox::from_string(&text).map_err(|e| fmt(e.to_string()))?;
    let secret = sk_box
        .into_unencrypted_secret_key()
        .map_err(|e| fmt(format!("{e} (password-protected keys cannot sign unattended; make one with `weir-sender keygen` or `minisign -G -W`)")))?;
    let public = PublicKey::from_secret_key(&secret).map_err(|e| fmt(e.to_string()))?;
    let id = key_id(&public);
    Ok(SigningKey { secret, public, id })
}

/// Writes a new link key: 32 random bytes as 64 hex digits, mode 0600.
pub fn write_link_key(path: &Path) -> Result<(), KeyError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| KeyError::Format {
        path: path.to_owned(),
        detail: format!("no randomness from the OS: {e}"),
    })?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    write_new(path, format!("{hex}\n").as_bytes(), 0o600)
}

/// Signs manifest bytes with the trusted comment weir requires.
pub fn sign_manifest(
    key: &SigningKey,
    manifest_bytes: &[u8],
    trusted_comment: &str,
) -> Result<String, KeyError> {
    let sig = minisign::sign(
        Some(&key.public),
        &key.secret,
        std::io::Cursor::new(manifest_bytes),
        Some(trusted_comment),
        Some(weir_bundle::UNTRUSTED_COMMENT),
    )
    .map_err(|e| KeyError::Format {
        path: PathBuf::from("<signing>"),
        detail: e.to_string(),
    })?;
    Ok(sig.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_pair_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("release");
        let (key, public, id) = keygen(&prefix).unwrap();
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            fs::read_to_string(&public)
                .unwrap()
                .contains(&id.to_string())
        );
        assert!(matches!(keygen(&prefix), Err(KeyError::Exists(_))));
        let loaded = load(&key).unwrap();
        assert_eq!(loaded.id, id);
    }

    #[test]
    fn a_readable_secret_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _, _) = keygen(&dir.path().join("k")).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load(&key),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
    }
}
