#!/usr/bin/env bash
# The test suite, on a fresh machine: installs what the tests drive (curl,
# pactester, openssl, prlimit/setpriv/unshare, dconf/gsettings, dbus-daemon,
# busctl, chromium, chromium-headless-shell, firefox-esr, squid, haproxy,
# lintian, Prometheus's Python parser; Debian packages, as root or with sudo),
# then runs `cargo test --workspace` on both monoio drivers (io_uring, then
# epoll with MONOIO_FORCE_LEGACY_DRIVER=1), then the package test
# (packaging/test-package.sh). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")"

# cargo-deb builds the .deb (packaging/test-package.sh); installed once per
# machine: about 3 minutes of compilation on 2 cores, then cached in
# ~/.cargo/bin. It compiles in the background while apt downloads and
# unpacks (mostly waiting on the network and the disk).
# (It needs a C compiler; without one it runs after apt installed gcc.)
deb_pid=""
if ! command -v cargo-deb >/dev/null && command -v cc >/dev/null; then
  deb_log=$(mktemp)
  deb_start=$(date +%s)
  cargo install cargo-deb --locked --quiet >"$deb_log" 2>&1 &
  deb_pid=$!
fi

need=()
command -v curl >/dev/null || need+=(curl)
command -v pactester >/dev/null || need+=(libpacparser1)
command -v gcc >/dev/null || need+=(gcc)
command -v openssl >/dev/null || need+=(openssl)
# prlimit and setpriv (tests/security.rs: a low descriptor limit, a second uid),
# unshare (tests/scaleout.rs: a hosts file in a private mount namespace).
{ command -v prlimit && command -v setpriv && command -v unshare; } >/dev/null || need+=(util-linux)
# tests/enforce.rs: dconf/gsettings on a private session bus (dbus-daemon,
# dconf-service, the org.gnome.system.proxy schema), and the browsers that
# must obey the policies msc writes (headless; about 30 s + 15 s of apt).
command -v dconf >/dev/null || need+=(dconf-cli)
command -v gsettings >/dev/null || need+=(libglib2.0-bin)
[ -e /usr/share/dbus-1/services/ca.desrt.dconf.service ] || need+=(dconf-service dconf-gsettings-backend)
[ -e /usr/share/glib-2.0/schemas/org.gnome.system.proxy.gschema.xml ] || need+=(gsettings-desktop-schemas)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
{ command -v mount && command -v timeout; } >/dev/null || need+=(mount coreutils)
command -v chromium >/dev/null || need+=(chromium)
command -v firefox-esr >/dev/null || need+=(firefox-esr)
# Third-party gateways and a load balancer (tests/squid.rs, tests/scaleout.rs);
# Debian installs them in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
command -v squid >/dev/null || need+=(squid-openssl)
command -v haproxy >/dev/null || need+=(haproxy)
# The package test (packaging/test-package.sh): lintian, systemd-analyze,
# script (a terminal for the removal question), man.
command -v lintian >/dev/null || need+=(lintian)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v script >/dev/null || need+=(bsdutils)
command -v man >/dev/null || need+=(man-db)
# The cross-origin page test (tests/client_state.rs) uses the headless shell.
command -v chromium-headless-shell >/dev/null || need+=(chromium-headless-shell)
# tests/user_view.rs: the status page in headless Chromium, a private session
# bus (dbus-daemon, busctl) for the tray icon, tar for the support bundle.
{ command -v chromium-headless-shell || command -v chromium; } >/dev/null || need+=(chromium-headless-shell)
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

# cargo-deb (started above, compiled while apt worked).
if [ -n "$deb_pid" ]; then
  if ! wait "$deb_pid"; then
    cat "$deb_log" >&2
    echo "cargo install cargo-deb failed" >&2
    exit 1
  fi
  echo "cargo install cargo-deb: $(( $(date +%s) - deb_start )) s (beside apt)"
elif ! command -v cargo-deb >/dev/null; then
  start=$(date +%s)
  cargo install cargo-deb --locked --quiet
  echo "cargo install cargo-deb: $(( $(date +%s) - start )) s"
fi

echo "== $(date -u +%T) cargo test --workspace (io_uring)"
cargo test --workspace
echo "== $(date -u +%T) cargo test --workspace (epoll)"
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --workspace
# The package, from the binary the tests just built (no I/O driver involved: once).
echo "== $(date -u +%T) packaging/test-package.sh"
bash packaging/test-package.sh target/debug/msc
echo "== $(date -u +%T) done"
