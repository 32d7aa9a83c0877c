#!/usr/bin/env bash
# The test suite, on a fresh machine: installs what the tests drive (curl,
# pactester, openssl, prlimit/setpriv, squid, haproxy; Debian packages, as root or with sudo),
# then runs `cargo test --workspace` on both monoio drivers (io_uring, then
# epoll with MONOIO_FORCE_LEGACY_DRIVER=1). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v curl >/dev/null || need+=(curl)
command -v pactester >/dev/null || need+=(libpacparser1)
command -v gcc >/dev/null || need+=(gcc)
command -v openssl >/dev/null || need+=(openssl)
# prlimit and setpriv (tests/security.rs: a low descriptor limit, a second uid),
# unshare (tests/scaleout.rs: a hosts file in a private mount namespace).
{ command -v prlimit && command -v setpriv && command -v unshare; } >/dev/null || need+=(util-linux)
# Third-party gateways and a load balancer (tests/squid.rs, tests/scaleout.rs);
# Debian installs them in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
command -v squid >/dev/null || need+=(squid-openssl)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --workspace
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --workspace
