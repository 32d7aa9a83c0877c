//! Fuzz harness for configuration parsing and validation.
//!
//! Arbitrary UTF-8 given to [`ClientConfig::from_text`] and
//! [`GatewayConfig::from_text`] must come back as a config or an error that
//! formats, never a panic. The cargo-fuzz target `fuzz/fuzz_targets/config.rs`
//! is a one-line call; the test below runs seeds and mutations in plain
//! `cargo test`.
//!
//! Compiled only for `cargo fuzz` (`--cfg fuzzing`) and tests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::client::ClientConfig;
use crate::config::gateway::GatewayConfig;

/// The credential files the examples name, so validation gets past the
/// "file not found" checks to the rest of the keys. Created once, empty, in
/// one fixed directory under the temporary directory.
fn config_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join("msc-fuzz-config");
        let made = std::fs::create_dir_all(&dir).and_then(|()| {
            for f in [
                "ca.pem",
                "client.pem",
                "client-key.pem",
                "gateway.pem",
                "gateway-key.pem",
            ] {
                std::fs::write(dir.join(f), b"")?;
            }
            Ok(())
        });
        if let Err(e) = made {
            panic!("cannot prepare {}: {e}", dir.display());
        }
        dir.join("fuzz.toml")
    })
}

pub fn fuzz_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = config_file();
    if let Err(e) = ClientConfig::from_text(file, text) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = GatewayConfig::from_text(file, text) {
        assert!(!e.to_string().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: &[&str] = &[
        include_str!("../examples/client.toml"),
        include_str!("../examples/gateway.toml"),
        "",
        "workers = 0\n[[gateways]]\naddr = \"[::1]:0\"\n",
        "listen = \"0.0.0.0:99999\"\n[tls]\ncert = \"/\"\n",
    ];

    #[test]
    fn examples_validate() {
        let file = config_file();
        if let Err(e) = ClientConfig::from_text(file, SEEDS[0]) {
            panic!("{e}");
        }
        if let Err(e) = GatewayConfig::from_text(file, SEEDS[1]) {
            panic!("{e}");
        }
    }

    #[test]
    fn config_seeds_and_mutations() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x2545_F491_4F6C_DD1D);
        let mut next = move || rand::Rng::random::<u64>(&mut rng);
        let pick = |r: u64, n: usize| usize::try_from(r % (n as u64).max(1)).unwrap_or(0);
        const CHARS: &[char] = &[
            '0', '9', '-', '"', '=', '[', ']', '\n', '.', ':', '*', '/', ' ', '#', 'é', '\'',
        ];
        for s in SEEDS {
            fuzz_config(s.as_bytes());
        }
        for _ in 0..1500 {
            let mut v: Vec<char> = SEEDS[pick(next(), SEEDS.len())].chars().collect();
            for _ in 0..1 + pick(next(), 3) {
                let r = next();
                let at = pick(r >> 8, v.len() + 1);
                match r % 4 {
                    0 => v.insert(at, CHARS[pick(r >> 32, CHARS.len())]),
                    1 if at < v.len() => {
                        v.remove(at);
                    }
                    2 if at < v.len() => {
                        // Duplicate a line-sized run: repeated keys and tables.
                        let end = (at + pick(r >> 36, 80)).min(v.len());
                        let dup: Vec<char> = v[at..end].to_vec();
                        v.splice(at..at, dup);
                    }
                    _ => {
                        // Replace a digit run with a large or negative number.
                        if let Some(d) = v.iter().skip(at).position(char::is_ascii_digit) {
                            let big = ["-1", "0", "18446744073709551616", "4294967296", "1e309"][pick(r >> 40, 5)];
                            v.splice(at + d..=at + d, big.chars());
                        }
                    }
                }
            }
            fuzz_config(v.into_iter().collect::<String>().as_bytes());
        }
    }
}
