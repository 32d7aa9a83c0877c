#!/usr/bin/env bash
# What a real JavaScript parser would add to a cold build: a throwaway crate
# depending on oxc_parser (the lightest well-kept full JS parser on crates.io
# we considered), built cold with this workspace's dev profile, one job, timed.
# The figure that matters on the shared 2-core machine is CPU time.
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
cat > Cargo.toml <<'TOML'
[package]
name = "jsparser-cost"
version = "0.1.0"
edition = "2024"
[dependencies]
oxc_parser = "0.146"
oxc_allocator = "0.146"
oxc_span = "0.146"
[profile.dev]
opt-level = 1
debug = "line-tables-only"
[profile.dev.package."*"]
opt-level = 3
debug = false
TOML
mkdir src
cat > src/main.rs <<'RS'
fn main() {
    let src = std::fs::read_to_string(std::env::args().nth(1).expect("a PAC file")).expect("readable");
    let alloc = oxc_allocator::Allocator::default();
    let r = oxc_parser::Parser::new(&alloc, &src, oxc_span::SourceType::cjs()).parse();
    println!("diagnostics: {}", r.diagnostics.len());
}
RS
cargo fetch -q
/usr/bin/time -f "wall %e s, user %U s, sys %S s, max RSS %M KiB" cargo build -q -j1
echo "crates in the graph: $(cargo tree --prefix none | sort -u | wc -l)"
