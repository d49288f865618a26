//! The `weir-receiver` command line.

use std::fs::File;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir_bundle::{TrustedKey, trust::public_key_from_file_text};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{LogFormat, Settings};
use crate::{daemon, status, trust_file};

/// weir-receiver: receive, verify and publish bundles from a one-way link.
#[derive(Debug, Parser)]
#[command(name = "weir-receiver", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a bundle against a trust store: exit 0 with a summary when it
    /// is valid, exit 1 with every reason when it is not. Either way it
    /// prints the file's transfer digest, as receipts and the sender's
    /// journal give it.
    Verify {
        /// The trust store.
        #[arg(long)]
        trust: PathBuf,
        /// The bundle.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle, then write its artifacts and SBOMs under DIR, a new
    /// directory that appears whole once everything is written (exit 1,
    /// and nothing written, when the bundle is rejected).
    Extract {
        /// The trust store.
        #[arg(long)]
        trust: PathBuf,
        /// The bundle.
        bundle: PathBuf,
        /// Where the files go; must not exist.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Manage the trust store.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Run the receiving daemon: listen on the link, rebuild, verify and
    /// publish bundles into the spool's staging/ directory.
    Run {
        /// Configuration file (TOML; WEIR_RECEIVER_* variables override it).
        #[arg(long)]
        config: PathBuf,
        /// Check the configuration, print the effective values and exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Show the running daemon's link state, transfers in flight and
    /// recent outcomes.
    Status {
        /// The daemon's configuration file (for the spool location).
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `weir-receiver trust ...`
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a public key (creates the store if missing; ids are unique).
    Add {
        /// The trust store.
        #[arg(long)]
        trust: PathBuf,
        /// A unique id for the key.
        #[arg(long)]
        id: String,
        /// Who holds the key.
        #[arg(long)]
        name: String,
        /// What its signatures vouch for (build, approve, ...); repeatable.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Stop trusting its signatures after this time (RFC 3339).
        #[arg(long)]
        not_after: Option<String>,
        /// The minisign public key file.
        key: PathBuf,
    },
    /// Revoke a key: its signatures never count again.
    Revoke {
        /// The trust store.
        #[arg(long)]
        trust: PathBuf,
        /// The key's id.
        id: String,
    },
    /// List the keys.
    List {
        /// The trust store.
        #[arg(long)]
        trust: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The outcome of a command: success, or a rejection already reported.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// Exit 1, the reasons were printed.
    Rejected,
}

/// Sets up logging to stderr (journald adds timestamps to human lines).
fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log_level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.without_time().try_init(),
    };
}

/// Runs one command; errors are printed by `main`.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Run {
            config,
            check_config,
        } => {
            let settings = Settings::load(&config)?;
            if check_config {
                println!("# {}: valid", config.display());
                print!("{}", settings.effective_toml());
                return Ok(Outcome::Ok);
            }
            init_logging(&settings);
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, stop.clone())?;
            }
            daemon::run(settings, stop)?;
            Ok(Outcome::Ok)
        }
        Command::Status { config, json } => {
            let settings = Settings::load(&config)?;
            let snapshot = status::read(&settings.spool)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshot)?);
            } else {
                print!("{}", status::render(&snapshot, status::unix_now()));
            }
            Ok(Outcome::Ok)
        }
        Command::Verify { trust, file, json } => {
            let store = trust_file::load(&trust)?;
            let f = File::open(&file).with_context(|| format!("{}", file.display()))?;
            let found = weir_bundle::verify(f, &store, SystemTime::now())
                .with_context(|| format!("reading {}", file.display()))?;
            let digest = found.digest.to_hex().to_string();
            match found.verdict {
                Ok(v) => {
                    let m = &v.manifest;
                    if json {
                        let out = serde_json::json!({
                            "verdict": "valid",
                            "file": file,
                            "digest": digest,
                            "name": m.name,
                            "version": m.version,
                            "created": m.created,
                            "artifacts": m.artifacts.len(),
                            "sboms": m.sboms.len(),
                            "bytes": v.archive_len,
                            "signers": v.signers,
                            "ignored_signatures": v.ignored_signatures,
                        });
                        println!("{}", serde_json::to_string_pretty(&out)?);
                    } else {
                        println!("valid: {} {} ({})", m.name, m.version, file.display());
                        println!("  digest {digest}");
                        println!(
                            "  {} artifacts, {} SBOMs, {} bytes",
                            m.artifacts.len(),
                            m.sboms.len(),
                            v.archive_len
                        );
                        for s in &v.signers {
                            println!(
                                "  signed by {} ({}, key {}, roles {})",
                                s.id,
                                s.name,
                                s.key_id,
                                s.roles.join(",")
                            );
                        }
                        for r in &v.ignored_signatures {
                            println!("  not counted: {r}");
                        }
                    }
                    Ok(Outcome::Ok)
                }
                Err(rejection) => {
                    print_rejection(&file, Some(&digest), &rejection, json)?;
                    Ok(Outcome::Rejected)
                }
            }
        }
        Command::Extract {
            trust,
            bundle,
            dir,
            json,
        } => {
            let store = trust_file::load(&trust)?;
            match crate::extract::extract(&store, &bundle, &dir)? {
                Ok(x) => {
                    let m = &x.bundle.manifest;
                    if json {
                        let out = serde_json::json!({
                            "verdict": "valid",
                            "file": bundle,
                            "digest": x.digest.to_hex().to_string(),
                            "name": m.name,
                            "version": m.version,
                            "dir": dir,
                            "files": x.files,
                            "bytes": x.bytes,
                        });
                        println!("{}", serde_json::to_string_pretty(&out)?);
                    } else {
                        println!(
                            "extracted: {} {}: {} files, {} bytes into {}",
                            m.name,
                            m.version,
                            x.files,
                            x.bytes,
                            dir.display()
                        );
                    }
                    Ok(Outcome::Ok)
                }
                Err(rejection) => {
                    print_rejection(&bundle, None, &rejection, json)?;
                    Ok(Outcome::Rejected)
                }
            }
        }
        Command::Trust(TrustCommand::Add {
            trust,
            id,
            name,
            roles,
            not_after,
            key,
        }) => {
            let text =
                std::fs::read_to_string(&key).with_context(|| format!("{}", key.display()))?;
            let public_key =
                public_key_from_file_text(&text).with_context(|| format!("{}", key.display()))?;
            let mut store = trust_file::load_or_empty(&trust)?;
            let entry = TrustedKey {
                id: id.clone(),
                name,
                public_key,
                roles,
                not_after,
                revoked: false,
            };
            let key_id = entry.key_id()?;
            store.add(entry)?;
            trust_file::save(&trust, &store)?;
            println!("trusted key {key_id} as {id} in {}", trust.display());
            Ok(Outcome::Ok)
        }
        Command::Trust(TrustCommand::Revoke { trust, id }) => {
            let mut store = trust_file::load(&trust)?;
            store.revoke(&id)?;
            trust_file::save(&trust, &store)?;
            println!("revoked {id} in {}", trust.display());
            Ok(Outcome::Ok)
        }
        Command::Trust(TrustCommand::List { trust, json }) => {
            let store = trust_file::load(&trust)?;
            let now = SystemTime::now();
            if json {
                let keys: Vec<_> = store
                    .keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id,
                            "name": k.name,
                            "key_id": k.key_id().map(|i| i.to_string()).unwrap_or_default(),
                            "roles": k.roles,
                            "not_after": k.not_after,
                            "status": format!("{:?}", k.status(now)).to_lowercase(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for k in &store.keys {
                    let key_id = k.key_id().map(|i| i.to_string()).unwrap_or_default();
                    println!(
                        "{:<20} {key_id}  {:<8} roles={:<16} not_after={}  {}",
                        k.id,
                        format!("{:?}", k.status(now)).to_lowercase(),
                        k.roles.join(","),
                        k.not_after.as_deref().unwrap_or("-"),
                        k.name
                    );
                }
            }
            Ok(Outcome::Ok)
        }
    }
}

/// Prints why a bundle was rejected: every reason kept (each cut to a
/// bounded length), and how many more there were.
fn print_rejection(
    file: &std::path::Path,
    digest: Option<&str>,
    rejection: &weir_bundle::Rejection,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let out = serde_json::json!({
            "verdict": "rejected",
            "file": file,
            "digest": digest,
            "reasons": rejection.reasons,
            "omitted": rejection.omitted,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("rejected: {}", file.display());
        if let Some(d) = digest {
            println!("  digest {d}");
        }
        for r in &rejection.reasons {
            println!("  {}: {r}", r.code());
        }
        if rejection.omitted > 0 {
            println!("  and {} more", rejection.omitted);
        }
    }
    Ok(())
}
