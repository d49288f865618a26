//! The `weir-sender` command line.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir_bundle::inspect;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::bundle::create::{CreateRequest, create, parse_label};
use crate::bundle::sign::add_signature;
use crate::config::{LogFormat, Settings};
use crate::daemon::{Daemon, send_files};
use crate::keys;

/// weir-sender: send signed bundles across a one-way link.
#[derive(Debug, Parser)]
#[command(name = "weir-sender", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a signing key pair: PREFIX.key (mode 0600) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Create, sign and inspect bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Run the daemon: send every bundle dropped into the outbox.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "/etc/weir/sender.toml")]
        config: PathBuf,
        /// Check the configuration, print the effective values and exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Send bundles in the foreground with a progress bar; exits 0 when
    /// every pass of every bundle went out.
    Send {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Bundles to send.
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
    },
    /// Make a link key (32 random bytes in hex, mode 0600) for authenticated
    /// frames; install the same file on the receiver.
    LinkKey {
        /// Where to write it; must not exist.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `weir-sender bundle ...`
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Build a signed bundle from artifacts (files, or directories taken
    /// recursively; symlinks are refused).
    Create {
        /// Secret key to sign with.
        #[arg(long)]
        key: PathBuf,
        /// Bundle name.
        #[arg(long)]
        name: String,
        /// Bundle version.
        #[arg(long)]
        version: String,
        /// A key=value label; repeat for more.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A CycloneDX or SPDX file to carry; repeat for more.
        #[arg(long = "sbom", value_name = "FILE")]
        sboms: Vec<PathBuf>,
        /// The bundle file to write; must not exist.
        #[arg(long)]
        out: PathBuf,
        /// Files or directories to include.
        #[arg(required = true, value_name = "ARTIFACT")]
        artifacts: Vec<PathBuf>,
    },
    /// Add an approval signature; the manifest and earlier signatures are
    /// left as they are.
    Sign {
        /// Secret key to sign with.
        #[arg(long)]
        key: PathBuf,
        /// The bundle.
        file: PathBuf,
    },
    /// Show a bundle's name, version, artifacts and signers (signatures are
    /// not verified here: the receiver does that against its trust store).
    Inspect {
        /// The bundle.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
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

/// A flag set by SIGTERM or SIGINT.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// Runs one command; the returned error is printed by `main`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            check_config,
        } => {
            let settings = Settings::load(&config)?;
            if check_config {
                println!("# {}: valid", config.display());
                print!("{}", settings.effective_toml());
                return Ok(());
            }
            init_logging(&settings);
            let stop = stop_flag()?;
            Daemon::new(settings, stop)?.run()?;
        }
        Command::Send { config, bundles } => {
            let settings = Settings::load(&config)?;
            init_logging(&settings);
            let stop = stop_flag()?;
            send_files(&settings, &bundles, &stop)?;
        }
        Command::LinkKey { out } => {
            keys::write_link_key(&out)?;
            println!(
                "link key written to {} (mode 0600); copy it to the receiver",
                out.display()
            );
        }
        Command::Keygen { out } => {
            let (key, public, id) = keys::keygen(&out)?;
            println!("key id {id}");
            println!(
                "secret key: {} (mode 0600; keep it on the build side)",
                key.display()
            );
            println!(
                "public key: {} (add it to the receiver's trust store)",
                public.display()
            );
        }
        Command::Bundle(BundleCommand::Create {
            key,
            name,
            version,
            labels,
            sboms,
            out,
            artifacts,
        }) => {
            let key = keys::load(&key)?;
            let labels = labels
                .iter()
                .map(|l| parse_label(l))
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
            let req = CreateRequest {
                name,
                version,
                labels,
                artifacts,
                sboms,
                out: out.clone(),
            };
            let m = create(&req, &key, SystemTime::now())?;
            println!(
                "created {} ({} {}, {} artifacts, {} SBOMs, signed by {})",
                out.display(),
                m.name,
                m.version,
                m.artifacts.len(),
                m.sboms.len(),
                key.id
            );
        }
        Command::Bundle(BundleCommand::Sign { key, file }) => {
            let key = keys::load(&key)?;
            let m = add_signature(&file, &key)?;
            println!(
                "signed {} ({} {}) with key {}",
                file.display(),
                m.name,
                m.version,
                key.id
            );
        }
        Command::Bundle(BundleCommand::Inspect { file, json }) => {
            let f = File::open(&file).with_context(|| format!("{}", file.display()))?;
            let info = inspect(f)
                .with_context(|| format!("reading {}", file.display()))?
                .map_err(|r| anyhow::anyhow!("{}: {r}", file.display()))?;
            let signers: Vec<String> = info.signatures.iter().map(|(k, _)| k.to_string()).collect();
            if json {
                let v = serde_json::json!({
                    "manifest": info.manifest,
                    "signatures": signers,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let m = &info.manifest;
                println!("name:      {}", m.name);
                println!("version:   {}", m.version);
                println!("created:   {}", m.created);
                for (k, v) in &m.labels {
                    println!("label:     {k}={v}");
                }
                println!("signed by: {} (not verified here)", signers.join(", "));
                for a in &m.artifacts {
                    println!(
                        "  {:o} {:>14} {}  {}",
                        a.mode.bits(),
                        a.size,
                        a.blake3,
                        a.path
                    );
                }
                for s in &m.sboms {
                    println!(
                        "  sbom {:?} {:>9} {}  {}",
                        s.format, s.size, s.blake3, s.path
                    );
                }
            }
        }
    }
    Ok(())
}
