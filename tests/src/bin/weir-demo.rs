//! The loopback demo: both daemons, for real, on this machine.
//!
//! It makes a signing key and a trust store, builds a signed bundle with
//! the `weir-sender` command line, starts `weir-receiver run` and
//! `weir-sender run` with configurations written next to them, and drops
//! the bundle into the sender's outbox. Between the two, a simulated
//! one-way link on 127.0.0.1 loses 3% of the frames, reorders some and
//! corrupts a few; the receiver rebuilds, verifies and publishes the bundle
//! into `staging/`, and the demo shows what an operator sees.
//!
//! ```text
//!  weir-sender run ─UDP─▶ lossy link (this process) ─UDP─▶ weir-receiver run
//!   outbox/app-1.0.weir                                     staging/app_1.0.weir
//! ```
//!
//! Needs the release binaries next to this one:
//! `cargo build --release --locked -p weir-sender -p weir-receiver -p weir-tests --bins`.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use weir_tests::bundles::write_random_file;
use weir_tests::daemons::{ReceiverProc, free_udp_addr, sender_config, terminate, wait_for};
use weir_tests::link::{LinkProfile, LossyLink};
use weir_tests::udp::lossy_proxy;

const RATE: &str = "400Mbit";

/// A binary next to this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("no directory")?.join(name);
    if !p.exists() {
        bail!(
            "{} is missing: build it with\n  cargo build --release --locked -p weir-sender -p weir-receiver -p weir-tests --bins",
            p.display()
        );
    }
    Ok(p)
}

/// Runs a command, echoing it, and fails with its output if it fails.
fn run(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let name = bin.file_name().unwrap_or_default().to_string_lossy();
    println!("$ {name} {}", args.join(" "));
    let out = Command::new(bin).args(args).output()?;
    if !out.status.success() {
        bail!(
            "{name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn main() -> anyhow::Result<()> {
    let sender = sibling("weir-sender")?;
    let receiver = sibling("weir-receiver")?;
    let dir = std::env::temp_dir().join(format!("weir-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let d = |p: &str| dir.join(p).display().to_string();
    println!("weir demo in {}\n", dir.display());

    // High side: a key and a signed bundle; low side: a trust store.
    print!(
        "{}",
        indent(&run(&sender, &["keygen", "--out", &d("release")])?)
    );
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist)?;
    write_random_file(&dist.join("app.img"), 40 << 20, 1)?;
    write_random_file(&dist.join("tools.tar"), 8 << 20, 2)?;
    std::fs::write(
        dir.join("app.cdx.json"),
        br#"{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []}"#,
    )?;
    let bundle = d("app-1.0.weir");
    print!(
        "{}",
        indent(&run(
            &sender,
            &[
                "bundle",
                "create",
                "--key",
                &d("release.key"),
                "--name",
                "app",
                "--version",
                "1.0",
                "--label",
                "channel=demo",
                "--sbom",
                &d("app.cdx.json"),
                "--out",
                &bundle,
                &d("dist"),
            ],
        )?)
    );
    let trust = d("trust.toml");
    print!(
        "{}",
        indent(&run(
            &receiver,
            &[
                "trust",
                "add",
                "--trust",
                &trust,
                "--id",
                "release",
                "--name",
                "Release key",
                "--role",
                "build",
                &d("release.pub"),
            ],
        )?)
    );

    // The link: sender -> lossy proxy (here) -> receiver, on loopback.
    let rx_addr = free_udp_addr()?;
    let proxy_socket = UdpSocket::bind("127.0.0.1:0")?;
    let proxy_addr = proxy_socket.local_addr()?;
    let profile = LinkProfile {
        loss: 0.03,
        reorder: 0.01,
        reorder_depth: 20,
        bit_flip: 0.001,
        ..LinkProfile::default()
    };
    std::thread::spawn(move || {
        lossy_proxy(
            &proxy_socket,
            rx_addr,
            LossyLink::new(profile, 7),
            Duration::from_secs(3600),
        )
    });
    println!("\nlink: 127.0.0.1, 3% of frames lost, 1% reordered, 0.1% corrupted, paced at {RATE}");

    let mut rx = ReceiverProc::configure(&receiver, &dir, rx_addr, Path::new(&trust), "", "")?;
    rx.start()?;
    println!(
        "receiver: {} run --config {} (log: {})",
        receiver.display(),
        rx.config.display(),
        rx.log.display()
    );
    let tx_config = sender_config(&dir, proxy_addr, Path::new(&trust), RATE, 2, "")?;
    let tx_log = std::fs::File::create(dir.join("sender.log"))?;
    let mut tx = Command::new(&sender)
        .args(["run", "--config"])
        .arg(&tx_config)
        .stderr(Stdio::from(tx_log))
        .spawn()?;
    println!(
        "sender:   {} run --config {} (log: {})",
        sender.display(),
        tx_config.display(),
        dir.join("sender.log").display()
    );

    // An operator drops the bundle into the outbox.
    let outbox = dir.join("tx-spool").join("outbox");
    wait_for("the sender's outbox", Duration::from_secs(10), || {
        outbox.exists()
    })?;
    let t = Instant::now();
    std::fs::copy(&bundle, outbox.join("app-1.0.weir"))?;
    println!("\ncopied app-1.0.weir into {}", outbox.display());
    let staged = rx.spool.join("staging").join("app_1.0.weir");
    let arrived = wait_for("the bundle in staging/", Duration::from_secs(120), || {
        staged.exists()
    });
    if let Err(e) = arrived {
        let _ = terminate(&mut tx);
        bail!("{e}\nreceiver log:\n{}", rx.log_text());
    }
    println!(
        "arrived in {:.1} s: {}\n",
        t.elapsed().as_secs_f64(),
        staged.display()
    );
    if std::fs::read(&staged)? != std::fs::read(&bundle)? {
        bail!("{} differs from what was sent", staged.display());
    }

    // What an operator sees.
    std::thread::sleep(Duration::from_millis(1100));
    let rx_config = rx.config.display().to_string();
    print!(
        "{}",
        indent(&run(&receiver, &["status", "--config", &rx_config])?)
    );
    let staging = rx.spool.join("staging").display().to_string();
    print!("{}", indent(&run(Path::new("ls"), &["-l", &staging])?));
    let receipt = std::fs::read_to_string(rx.spool.join("staging").join("app_1.0.receipt.json"))?;
    println!("receipt:\n{}", indent(&receipt));
    let metrics = rx.scrape()?;
    println!(
        "metrics (excerpt of http://{}/metrics):",
        rx.metrics_addr()?
    );
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("weir_receiver_blocks_total")
                || l.starts_with("weir_receiver_frames_lost_total")
                || l.contains("reason=\"corrupt\"")
                || l.starts_with("weir_receiver_transfers_total"))
    }) {
        println!("    {line}");
    }

    terminate(&mut tx)?;
    rx.stop()?;
    println!("\nok: the bundle arrived bit-identical, verified against the trust store");
    println!("everything is left in {} for a look", dir.display());
    Ok(())
}
