//! Bundle verification throughput: a 1 GiB single-artifact bundle,
//! verified from page cache on one core with the transfer digest in the
//! same pass (what both daemons and `weir-receiver verify` do), after a
//! warm-up, five times; prints each run and the median in GB/s.
//!
//! `cargo run --release -p weir-bench --bin bundle_verify [SIZE_MIB]`

use std::fs::File;
use std::time::{Instant, SystemTime};

use anyhow::Context;
use weir_bundle::{TrustStore, TrustedKey, verify};
use weir_sender::bundle::create::{CreateRequest, create};
use weir_sender::keys;

fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1024);
    let dir = tempfile::tempdir()?;
    let (key_path, _, _) = keys::keygen(&dir.path().join("k"))?;
    let key = keys::load(&key_path)?;
    let public = key.public.to_box()?.into_string();
    let mut trust = TrustStore::default();
    trust.add(TrustedKey {
        id: "bench".into(),
        name: "bench".into(),
        public_key: public.lines().nth(1).context("public key")?.to_owned(),
        roles: vec!["build".into()],
        not_after: None,
        revoked: false,
    })?;

    let artifact = dir.path().join("image.bin");
    weir_tests::bundles::write_random_file(&artifact, mib << 20, 1)?;
    let out = dir.path().join("bench.weir");
    let req = CreateRequest {
        name: "bench".into(),
        version: "1".into(),
        labels: Default::default(),
        artifacts: vec![artifact.clone()],
        sboms: vec![],
        out: out.clone(),
    };
    let t = Instant::now();
    create(&req, &key, SystemTime::now())?;
    println!(
        "bundle create: {mib} MiB in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_file(&artifact)?;

    let mut rates = Vec::new();
    for run in 0..6 {
        let t = Instant::now();
        // No BufReader: the driver reads in large chunks, as the sender's
        // check does.
        let d = verify(File::open(&out)?, &trust, SystemTime::now())?;
        d.verdict.map_err(|r| anyhow::anyhow!("{r}"))?;
        let secs = t.elapsed().as_secs_f64();
        let rate = d.len as f64 / secs / 1e9;
        // The first run warms the page cache.
        if run > 0 {
            rates.push(rate);
        }
        println!("run {run}: {secs:.3} s, {rate:.2} GB/s");
    }
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or_default();
    println!("median, verify + transfer digest (page cache, one core): {median:.2} GB/s");
    Ok(())
}
