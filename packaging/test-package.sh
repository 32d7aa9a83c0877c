#!/usr/bin/env bash
# The package test (CI runs it from test.sh): builds the .deb with cargo-deb
# from an already-built msc binary, runs lintian, checks the units with
# systemd-analyze, then installs, removes and purges it in a scratch root and
# checks files, modes, owners, the service user and the removal question.
#
# The scratch root: a private mount namespace (unshare -m) with a tmpfs; its
# /usr is an overlay whose lower layer is the host's /usr (the maintainer
# scripts run chrooted there and need sh, adduser, debconf, deb-systemd-helper)
# and whose upper layer receives the package's files; /etc, the dpkg database
# and the debconf database are copies. `dpkg --root` runs the real maintainer
# scripts in it; nothing reaches the host, and everything vanishes with the
# namespace.
#
# Usage: packaging/test-package.sh [path/to/msc]   (default: target/debug/msc)
# The binary in the package is the one given: the release .deb is built the
# same way by `cargo deb` (release profile); this test checks the packaging,
# not the optimiser, and a fat-LTO build would cost minutes of CI.
set -euo pipefail

if [ "${1:-}" = "--inner" ]; then
    inner=1
    work="$2"
else
    inner=0
fi

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*" >&2; }
check() { # check "what" command...
    local what="$1"
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
mode_owner() { # mode_owner PATH "MODE UID GID"
    local got
    got="$(stat -c '%a %u %g' "$1" 2>/dev/null || echo missing)"
    [ "$got" = "$2" ] || { echo "  $1: $got, expected $2" >&2; return 1; }
}

if [ "$inner" = 0 ]; then
    cd "$(dirname "$0")/.."
    bin="${1:-target/debug/msc}"
    [ "$(id -u)" = 0 ] || { echo "error: the package test needs root (a private mount namespace, chroot)" >&2; exit 1; }
    for tool in cargo-deb lintian systemd-analyze dpkg dpkg-deb unshare script setpriv; do
        command -v "$tool" >/dev/null || { echo "error: $tool is not installed (test.sh installs it)" >&2; exit 1; }
    done
    [ -x "$bin" ] || { echo "error: $bin does not exist: build it first (cargo build)" >&2; exit 1; }
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/target/release"
    cp "$bin" "$work/target/release/msc"
    # cargo-deb maps target/release/ in the asset list to $CARGO_TARGET_DIR/release/.
    t0=$(date +%s%N)
    CARGO_TARGET_DIR="$work/target" cargo deb --no-build --strip --fast --output "$work/out" >"$work/cargo-deb.log" 2>&1 \
        || { cat "$work/cargo-deb.log" >&2; exit 1; }
    echo "cargo deb: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    deb="$(echo "$work"/out/msc_*.deb)"
    cp "$deb" "$work/msc.deb"

    # Lint: no error, warning, info or pedantic tag (overrides carry their reason).
    if lintian --pedantic --fail-on error,warning,info,pedantic "$work/msc.deb" >"$work/lintian.log" 2>&1; then
        ok "lintian (pedantic) reports nothing"
    else
        cat "$work/lintian.log" >&2
        fail "lintian"
    fi
    unshare -m --propagation private "$0" --inner "$work"
    exit $?
fi

# ---- inside the private mount namespace ----
R="$work/root"
mkdir -p "$work/fs"
mount -t tmpfs tmpfs "$work/fs"
mkdir -p "$R" "$work/fs/upper" "$work/fs/work" "$R/usr"
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$work/fs/upper,workdir=$work/fs/work" "$R/usr"
for l in bin sbin lib lib64; do ln -s "usr/$l" "$R/$l"; done
cp -a /etc "$R/etc"
mkdir -p "$R/var/lib" "$R/var/cache" "$R/var/log" "$R/run" "$R/tmp" "$R/dev" "$R/proc" "$R/root"
chmod 1777 "$R/tmp"
cp -a /var/lib/dpkg "$R/var/lib/dpkg"
cp -a /var/cache/debconf "$R/var/cache/debconf"
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
# The host may have had none of these; make sure the root starts clean.
rm -rf "$R/etc/msc"
dpkg_r() { dpkg --root="$R" --force-unsafe-io "$@"; }

# 1. Install: silent (no question, no script output), from a non-interactive shell.
if DEBIAN_FRONTEND=noninteractive dpkg_r -i "$work/msc.deb" </dev/null >"$work/install.log" 2>&1; then
    ok "dpkg -i"
else
    cat "$work/install.log" >&2
    fail "dpkg -i"
fi
# dpkg's own lines, deb-systemd-helper's (enabling units) and man-db's trigger only.
if grep -v -e '^Selecting previously unselected' -e '^(Reading database' -e '^Preparing to unpack' \
    -e '^Unpacking msc' -e '^Setting up msc' -e '^Processing triggers' -e '^Created symlink ' \
    -e '^Not building database; man-db' "$work/install.log" >&2; then
    fail "the installation printed nothing of its own (lines above)"
else
    ok "the installation printed nothing of its own"
fi

uid="$(chroot "$R" id -u msc 2>/dev/null || echo none)"
gid="$(chroot "$R" id -g msc 2>/dev/null || echo none)"
check "system user msc exists (uid $uid < 1000, no login shell)" \
    bash -c "[ '$uid' != none ] && [ '$uid' -lt 1000 ] && chroot '$R' getent passwd msc | grep -q ':/usr/sbin/nologin$'"
check "/usr/bin/msc 755 root" mode_owner "$R/usr/bin/msc" "755 0 0"
check "the packaged binary runs" bash -c "chroot '$R' msc --version | grep -q '^msc '"
for f in client.toml.example gateway.toml.example; do
    check "/etc/msc/$f 644 root" mode_owner "$R/etc/msc/$f" "644 0 0"
done
check "/etc/msc/private 700 msc" mode_owner "$R/etc/msc/private" "700 $uid $gid"
for u in msc msc-watchdog msc-gateway; do
    check "unit $u.service 644 root" mode_owner "$R/usr/lib/systemd/system/$u.service" "644 0 0"
done
check "man page" mode_owner "$R/usr/share/man/man1/msc.1.gz" "644 0 0"
check "msc.service enabled" test -L "$R/etc/systemd/system/multi-user.target.wants/msc.service"
check "msc-watchdog.service enabled" test -L "$R/etc/systemd/system/multi-user.target.wants/msc-watchdog.service"
check "msc-gateway.service not enabled" test ! -e "$R/etc/systemd/system/multi-user.target.wants/msc-gateway.service"
if (cd "$R" && systemd-analyze verify --root="$R" --man=no \
    /usr/lib/systemd/system/msc.service /usr/lib/systemd/system/msc-watchdog.service \
    /usr/lib/systemd/system/msc-gateway.service) >"$work/verify.log" 2>&1 && [ ! -s "$work/verify.log" ]; then
    ok "systemd-analyze verify: clean"
else
    cat "$work/verify.log" >&2
    fail "systemd-analyze verify"
fi
# Hardening: systemd's own exposure score (0 = locked down, 10 = none), each unit under 3.
for u in msc msc-watchdog msc-gateway; do
    score="$(systemd-analyze security --offline=true --root="$R" "/usr/lib/systemd/system/$u.service" 2>/dev/null \
        | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
    check "systemd-analyze security $u.service: ${score:-?} < 3.0" \
        awk -v s="${score:-99}" 'BEGIN { exit !(s < 3.0) }'
done
check "man page renders without warnings" \
    bash -c "[ -z \"\$(MANWIDTH=80 man --warnings -l '$R/usr/share/man/man1/msc.1.gz' 2>&1 >/dev/null)\" ]"

# The private key: the msc user reads it, nobody else (but root) does.
echo "not a real key" >"$work/key"
chroot "$R" install -o msc -g msc -m 0600 /dev/stdin /etc/msc/private/client-key.pem <"$work/key"
check "the msc user reads the private key" \
    bash -c "chroot '$R' setpriv --reuid=msc --regid=msc --clear-groups cat /etc/msc/private/client-key.pem | grep -q 'not a real key'"
check "another user cannot" \
    bash -c "! chroot '$R' setpriv --reuid=nobody --regid=nogroup --clear-groups cat /etc/msc/private/client-key.pem 2>/dev/null"

# The packaged launcher (msc.service's ExecStart), as the service user: it
# execs the release the updater recorded in the service's state directory.
check "msc.service starts the client through msc launch" \
    grep -q '^ExecStart=/usr/bin/msc launch --config /etc/msc/client.toml$' "$R/usr/lib/systemd/system/msc.service"
check "msc.service has its state directory (update.install_dir)" \
    grep -q '^StateDirectory=msc$' "$R/usr/lib/systemd/system/msc.service"
rel="$R/var/lib/msc/releases"
mkdir -p "$rel"
printf '#!/bin/sh\necho "release 9.9.9 ran: $*"\n' >"$rel/msc-9.9.9"
chmod 755 "$rel/msc-9.9.9"
ln -s /var/lib/msc/releases/msc-9.9.9 "$rel/current"
echo '{"current":{"version":"9.9.9","path":"/var/lib/msc/releases/msc-9.9.9"}}' >"$rel/state.json"
chroot "$R" chown -R msc:msc /var/lib/msc
touch "$R/etc/msc/launch-ca.pem" "$R/etc/msc/launch-client.pem"
cat >"$R/etc/msc/launch-test.toml" <<'TOML'
[tls]
ca = "/etc/msc/launch-ca.pem"
cert = "/etc/msc/launch-client.pem"
key = "/etc/msc/private/client-key.pem"
[[servers]]
name = "gw"
address = "gateway.example.com:443"
http_port = 3128
[update]
enabled = true
public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
install_dir = "/var/lib/msc/releases"
TOML
check "msc launch (user msc) execs the installed release" \
    bash -c "chroot '$R' setpriv --reuid=msc --regid=msc --clear-groups msc launch --config /etc/msc/launch-test.toml 2>'$work/launch.log' \
        | grep -q '^release 9.9.9 ran: --log info run --config /etc/msc/launch-test.toml$' || { cat '$work/launch.log' >&2; false; }"
rm -f "$R/etc/msc/launch-test.toml" "$R/etc/msc/launch-ca.pem" "$R/etc/msc/launch-client.pem"

# The administrator's configuration, with an uninstall warning of its own.
sed 's/^warning = .*/warning = "ACME: call the help desk (ext. 4242) before removing msc"/' \
    "$R/etc/msc/client.toml.example" >"$R/etc/msc/client.toml"

# 2. Removal without a terminal and without the override: refused, warning shown.
if DEBIAN_FRONTEND=noninteractive dpkg_r -r msc </dev/null >"$work/remove1.log" 2>&1; then
    cat "$work/remove1.log" >&2
    fail "non-interactive removal without MSC_CONFIRM_REMOVAL was refused"
else
    ok "non-interactive removal without MSC_CONFIRM_REMOVAL was refused"
fi
check "the refusal shows the configured warning" grep -q "call the help desk (ext. 4242)" "$work/remove1.log"
sed 's/^/  | /' "$work/remove1.log"
check "still installed after the refusal" \
    bash -c "dpkg --root='$R' -s msc | grep -q '^Status: [a-z]* ok installed$' && [ -x '$R/usr/bin/msc' ]"

# 3. Interactive removal (a terminal, debconf's teletype front end): "no" keeps it.
printf 'no\n' | DEBIAN_FRONTEND=teletype script -qec "dpkg --root='$R' --force-unsafe-io -r msc" /dev/null \
    >"$work/remove2.log" 2>&1 || true
check "the question shows the configured warning" grep -q "call the help desk (ext. 4242)" "$work/remove2.log"
check "answering no keeps msc installed" \
    bash -c "dpkg --root='$R' -s msc | grep -q '^Status: [a-z]* ok installed$'"

# 4. Interactive "yes" removes it; the admin's files and the user stay until purge.
printf 'yes\n' | DEBIAN_FRONTEND=teletype script -qec "dpkg --root='$R' --force-unsafe-io -r msc" /dev/null \
    >"$work/remove3.log" 2>&1 || true
check "answering yes removes msc" bash -c "! dpkg --root='$R' -s msc 2>/dev/null | grep -q '^Status: [a-z]* ok installed$'"
check "the binary is gone" test ! -e "$R/usr/bin/msc"
check "remove keeps the configuration" test -e "$R/etc/msc/client.toml"

# 5. Reinstall, then removal with the documented override for fleet tools.
DEBIAN_FRONTEND=noninteractive dpkg_r -i "$work/msc.deb" </dev/null >"$work/install2.log" 2>&1 || { cat "$work/install2.log" >&2; fail "reinstall"; }
if MSC_CONFIRM_REMOVAL=yes DEBIAN_FRONTEND=noninteractive dpkg_r -r msc </dev/null >"$work/remove4.log" 2>&1; then
    ok "removal with MSC_CONFIRM_REMOVAL=yes"
else
    cat "$work/remove4.log" >&2
    fail "removal with MSC_CONFIRM_REMOVAL=yes"
fi
check "the override still shows the warning" grep -q "call the help desk (ext. 4242)" "$work/remove4.log"

# 6. Purge removes everything the package created.
DEBIAN_FRONTEND=noninteractive dpkg_r --purge msc </dev/null >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "purge"; }
check "purge: /etc/msc is gone" test ! -e "$R/etc/msc"
check "purge: /var/lib/msc (installed releases) is gone" test ! -e "$R/var/lib/msc"
check "purge: the msc user and group are gone" \
    bash -c "! grep -q '^msc:' '$R/etc/passwd' && ! grep -q '^msc:' '$R/etc/group' && ! grep -q '^msc:' '$R/etc/shadow'"
check "purge: no unit symlink or enablement state left" \
    bash -c "[ -z \"\$(find '$R/etc/systemd' '$R/var/lib/systemd' -name '*msc*' 2>/dev/null)\" ]"
check "purge: nothing of msc left under /usr" \
    bash -c "[ -z \"\$(find '$work/fs/upper' -name '*msc*' 2>/dev/null)\" ]"
check "purge: dpkg knows no msc" bash -c "! dpkg --root='$R' -s msc >/dev/null 2>&1"
check "purge: debconf forgot the question" \
    bash -c "! grep -q 'msc/confirm-removal' '$R/var/cache/debconf/config.dat' '$R/var/cache/debconf/templates.dat'"

echo "package: $passed passed, $failed failed"
[ "$failed" = 0 ]
