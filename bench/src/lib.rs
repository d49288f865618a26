//! Benchmark support; the benchmarks are in `benches/` and `src/bin/`.

/// Receives with UDP GRO and kernel timestamps: the tests' receiver.
pub use weir_tests::udp::gro_receive;

/// CPU seconds (user + system) process `pid` used so far (`None`: this
/// process), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set of process `pid` in bytes (`VmHWM`); 0 if it cannot
/// be read.
pub fn peak_rss(pid: u32) -> u64 {
    weir_tests::memory::peak_rss(pid).unwrap_or(0)
}

/// The median of some figures (the upper one for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}
