#!/usr/bin/env bash
# The test suite, on a fresh machine: installs what the tests drive (curl,
# pactester, openssl, prlimit/setpriv, headless Chromium, dbus-daemon, busctl,
# Prometheus's Python parser; Debian packages, as root or with sudo),
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
# tests/user_view.rs: the status page in headless Chromium, a private session
# bus (dbus-daemon, busctl) for the tray icon, tar for the support bundle.
{ command -v chromium-headless-shell || command -v chromium; } >/dev/null || need+=(chromium-headless-shell)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
command -v busctl >/dev/null || need+=(systemd)
command -v tar >/dev/null || need+=(tar)
# /metrics is checked with Prometheus's own Python parser: Debian's package
# when the archive has it, else pip (below, after apt).
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
prom_pip=""
if ! /usr/bin/python3 -c 'import prometheus_client.parser' 2>/dev/null; then
  # apt-cache knows the candidate only after an update.
  $sudo apt-get update -qq
  if apt-cache policy python3-prometheus-client 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    need+=(python3-prometheus-client)
  else
    prom_pip=1
  fi
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -n "$prom_pip" ]; then
  echo "installing: prometheus_client (pip)"
  python3 -m pip install --quiet prometheus_client
fi

cargo test --workspace
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --workspace
