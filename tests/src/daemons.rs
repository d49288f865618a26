//! The real daemons as child processes, each with its own configuration
//! and spool in a temporary directory: for whole-process tests, the demo
//! and the end-to-end benchmark.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Waits until `f` holds, polling every 20 ms, or fails after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    while !f() {
        if Instant::now() > end {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Sends SIGTERM and waits (up to 30 s) for the process to exit.
pub fn terminate(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    signal(child, "TERM")?;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            bail!("process {} did not stop on SIGTERM", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal by name (`TERM`, `KILL`) with kill(1).
pub fn signal(child: &Child, sig: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()?;
    if !status.success() {
        bail!("kill -{sig} {} failed", child.id());
    }
    Ok(())
}

/// A free UDP port on 127.0.0.1 (bound and released: good enough on a
/// test machine's loopback).
pub fn free_udp_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET /metrics` from the endpoint at `addr`.
pub fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("metrics answered {head}");
    }
    Ok(body.to_owned())
}

/// Writes `dir/receiver.toml` for a receiver listening on `listen`, its
/// spool at `dir/rx-spool`, metrics on a free port of 127.0.0.1: `[link]`
/// keys go in `link_extra`, other sections in `extra`. Returns the
/// configuration's path and the spool's.
pub fn receiver_config(
    dir: &Path,
    listen: SocketAddr,
    trust: &Path,
    link_extra: &str,
    extra: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let spool = dir.join("rx-spool");
    let config = dir.join("receiver.toml");
    std::fs::write(
        &config,
        format!(
            r#"[link]
listen = "{listen}"
{link_extra}

[spool]
root = "{spool}"
trust = "{trust}"

[metrics]
listen = "127.0.0.1:0"

{extra}
"#,
            spool = spool.display(),
            trust = trust.display(),
        ),
    )?;
    Ok((config, spool))
}

/// A `weir-receiver run` with its spool under `dir`.
#[derive(Debug)]
pub struct ReceiverProc {
    /// The configuration file.
    pub config: PathBuf,
    /// The spool root.
    pub spool: PathBuf,
    /// The process, while running.
    pub child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
    bin: PathBuf,
}

impl ReceiverProc {
    /// Writes a configuration listening on `listen` with `extra` TOML
    /// appended (sections `[limits]`, `[link]` keys go in `link_extra`).
    pub fn configure(
        bin: &Path,
        dir: &Path,
        listen: SocketAddr,
        trust: &Path,
        link_extra: &str,
        extra: &str,
    ) -> anyhow::Result<Self> {
        let (config, spool) = receiver_config(dir, listen, trust, link_extra, extra)?;
        Ok(Self {
            config,
            spool,
            child: None,
            log: dir.join("receiver.log"),
            bin: bin.to_owned(),
        })
    }

    /// Starts it and waits for its first status snapshot.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.spool.join("status.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("WEIR_LOG", "info")
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let status = self.spool.join("status.json");
        let res = wait_for(
            "the receiver's status file",
            Duration::from_secs(20),
            || status.exists(),
        );
        if res.is_err() {
            bail!("the receiver did not start:\n{}", self.log_text());
        }
        Ok(())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        match std::fs::read_to_string(&self.log) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("reading {}: {e}", self.log.display()),
        }
    }

    /// Its latest status snapshot.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let text = std::fs::read_to_string(self.spool.join("status.json"))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The metrics endpoint.
    pub fn metrics_addr(&self) -> anyhow::Result<SocketAddr> {
        let s = self.status()?;
        let m = s
            .get("metrics")
            .and_then(|m| m.as_str())
            .context("no metrics address in status.json")?;
        Ok(m.parse()?)
    }

    /// `GET /metrics`.
    pub fn scrape(&self) -> anyhow::Result<String> {
        scrape(self.metrics_addr()?)
    }

    /// Files in a spool directory (`staging`, `quarantine`, ...), sorted.
    /// The daemon makes every one of them when it starts: an error reading
    /// one (a missing directory among them) fails the test, rather than
    /// passing for an empty directory.
    pub fn files(&self, sub: &str) -> Vec<String> {
        let dir = self.spool.join(sub);
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .and_then(|rd| {
                rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        v.sort();
        v
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        terminate(&mut child)
    }

    /// SIGKILL.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("not running")?;
        signal(&child, "KILL")?;
        child.wait()?;
        Ok(())
    }

    /// Process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for ReceiverProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes a sender configuration aimed at `destination`, bound to a free
/// port of 127.0.0.1; see [`sender_config_from`].
pub fn sender_config(
    dir: &Path,
    destination: SocketAddr,
    trust: &Path,
    rate: &str,
    passes: u32,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    sender_config_from(
        dir,
        "127.0.0.1:0",
        destination,
        trust,
        rate,
        passes,
        "",
        extra,
    )
}

/// Writes `dir/sender.toml` for a sender bound to `bind`, aimed at
/// `destination`, with its spool at `dir/tx-spool`: short pauses and
/// heartbeats, no settle time. `[transfer]` keys go in `transfer_extra`,
/// other sections in `extra`.
#[allow(clippy::too_many_arguments)]
pub fn sender_config_from(
    dir: &Path,
    bind: &str,
    destination: SocketAddr,
    trust: &Path,
    rate: &str,
    passes: u32,
    transfer_extra: &str,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let config = dir.join("sender.toml");
    std::fs::write(
        &config,
        format!(
            r#"[link]
destination = "{destination}"
bind = "{bind}"
rate = "{rate}"

[transfer]
passes = {passes}
pass_pause = "200ms"
heartbeat_interval = "200ms"
settle_time = "0s"
{transfer_extra}

[spool]
root = "{spool}"
trust = "{trust}"

{extra}
"#,
            spool = dir.join("tx-spool").display(),
            trust = trust.display(),
        ),
    )?;
    Ok(config)
}

/// A fake systemd notification socket, as `NOTIFY_SOCKET` names it.
#[derive(Debug)]
pub struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    /// Where it is bound.
    pub path: PathBuf,
    /// Every message so far, one per line.
    pub messages: String,
}

impl NotifySocket {
    /// Binds a socket at `path`.
    pub fn bind(path: &Path) -> anyhow::Result<Self> {
        let socket = std::os::unix::net::UnixDatagram::bind(path)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Self {
            socket,
            path: path.to_owned(),
            messages: String::new(),
        })
    }

    /// Reads notifications until every one of `wanted` was seen, or fails
    /// after `limit`. Keep reading, as systemd does: a notification socket
    /// nobody reads makes the daemon's notifications block.
    pub fn wait_for(&mut self, wanted: &[&str], limit: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while !wanted.iter().all(|w| self.messages.contains(w)) {
            if Instant::now() > end {
                bail!("no {wanted:?} in {:?}", self.messages);
            }
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.messages
                    .push_str(&String::from_utf8_lossy(buf.get(..n).unwrap_or_default()));
                self.messages.push('\n');
            }
        }
        Ok(())
    }

    /// Keeps reading on a thread until `wanted` arrives (true) or `limit`
    /// passes (false).
    pub fn drain_until(
        mut self,
        wanted: &'static str,
        limit: Duration,
    ) -> std::thread::JoinHandle<bool> {
        std::thread::spawn(move || self.wait_for(&[wanted], limit).is_ok())
    }
}
