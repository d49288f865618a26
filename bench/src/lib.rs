//! Benchmark support; the benchmarks are in `benches/` and `src/bin/`.
