//! Criterion benchmarks of watchnext live in `benches/`; run them with
//! `cargo bench -p watchnext-benches`. `BENCHMARKS.md` at the repository root
//! records the figures, each with the command that reproduces it.
