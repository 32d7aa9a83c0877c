#!/usr/bin/env bash
# The test suite, on a fresh machine: installs what the tests drive (curl,
# pactester, openssl, prlimit/setpriv, dbus-daemon, chromium-headless-shell; Debian packages, as root or with sudo),
# then runs `cargo test --workspace` on both monoio drivers (io_uring, then
# epoll with MONOIO_FORCE_LEGACY_DRIVER=1). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v curl >/dev/null || need+=(curl)
command -v pactester >/dev/null || need+=(libpacparser1)
command -v gcc >/dev/null || need+=(gcc)
command -v openssl >/dev/null || need+=(openssl)
# prlimit and setpriv (tests/security.rs: a low descriptor limit, a second uid).
{ command -v prlimit && command -v setpriv; } >/dev/null || need+=(util-linux)
# A private bus for the logind stand-in, and a browser for cross-origin pages (tests/client_state.rs).
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
command -v chromium-headless-shell >/dev/null || need+=(chromium-headless-shell)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --workspace
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --workspace
