//! Shared helpers for the msc criterion benchmarks (see `benches/`).
#![forbid(unsafe_code)]
