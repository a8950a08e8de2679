#!/usr/bin/env bash
# A newcomer's first command on a fresh Debian 12 (python3, git, CA certificates;
# no pip): ./demo, on a debootstrap of just that, with this machine's way to the
# registries copied in (DNS, its CA certificates, the proxy/CA/index variables)
# and a clone of this repository's HEAD in /srv/multinode. Prints the wall times.
#
#   bench/fresh_debian.sh [--test] [CACHE]     (as root)
#
# --test: ./test there too, after ./demo (the whole suite: many minutes, every CPU).
# CACHE:  a directory where the fresh root is built once, then copied for each run
#         (never written); without it, the root is built for this run alone.
#
# The fresh root is / of a mount namespace of its own, as on a real machine; a
# plain chroot will not do, for two reasons: `ip netns exec` makes / a slave
# ("mount --make-rslave /"), which fails (EINVAL) where / is no mount point; and
# the sandbox finds each node's init by its /proc/PID/root, which the kernel spells
# from the root of that process's mount namespace (the host's /: /var/tmp/...),
# never as a chroot sees it, so no node seems to start.
# Whatever happens, ./demo's sandbox (and any of ./test's) is torn down there with
# `uv run fab sandbox.down` before the namespace, its mounts and the copy go.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
run_test=""
if [ "${1:-}" = --test ]; then run_test=--test; shift; fi
cache=${1:-}
if [ "$(id -u)" != 0 ]; then
    echo "fresh_debian: needs root (debootstrap, mounts, network namespaces)" >&2
    exit 2
fi
mirror=$(awk '$1 == "URIs:" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}")
for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY SSL_CERT_FILE SSL_CERT_DIR \
    REQUESTS_CA_BUNDLE PIP_CERT PIP_INDEX_URL UV_INDEX_URL UV_DEFAULT_INDEX UV_NATIVE_TLS; do
    if [ -n "${!var:-}" ]; then env+=("$var=${!var}"); fi
done
work=$(mktemp -d /var/tmp/fresh-debian.XXXXXX)
root=$work/root
session=""

cleanup() {
    set +e
    if [ -n "$session" ]; then  # interrupted: its EXIT trap tears the sandbox down
        kill -TERM -- "-$session" 2>/dev/null
        wait "$session"
    fi
    # The sandbox's blackhole route is the host's (one network namespace): the fresh
    # root's teardown removes it even while this machine's own sandboxes still use it.
    if ip netns list 2>/dev/null | grep -q -- '-sw\b'; then ip route replace blackhole 198.18.0.0/15; fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

debootstrap_fresh() {  # what a fresh cloud image of Debian 12 holds, for this purpose
    debootstrap --variant=minbase --include=python3,git,ca-certificates bookworm "$1" "$mirror" >/dev/null
}
start=$(date +%s.%N)
if [ -n "$cache" ]; then
    if [ ! -d "$cache/rootfs" ]; then
        mkdir -p "$cache"
        rm -rf "$cache/rootfs.building"
        debootstrap_fresh "$cache/rootfs.building"
        mv "$cache/rootfs.building" "$cache/rootfs"
    fi
    cp -a "$cache/rootfs" "$root"
else
    debootstrap_fresh "$root"
fi
echo "fresh_debian: a fresh Debian 12 in $root: $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f s", b - a}')"
if chroot "$root" python3 -m pip --version >/dev/null 2>&1; then
    echo "fresh_debian: this root has pip, a fresh Debian 12 has not" >&2
    exit 1
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
# What an installed Debian has and debootstrap leaves out: /etc/hosts (the installer writes it).
[ -e "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
for conf in /etc/apt/apt.conf.d/*; do  # how apt here takes its mirror (a snapshot: expired Release files)
    if grep -q '^Acquire::' "$conf"; then cp "$conf" "$root/etc/apt/apt.conf.d/"; fi
done
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1  # it warns about the bundle it makes
fi
git clone -q "$repo" "$root/srv/multinode"

# Mounts as on a booted machine, then the fresh root becomes / (the old one detached).
boot='set -e
mount --bind "$1" "$1"; cd "$1"
mount -t proc proc proc; mount -t sysfs sysfs sys; mount --rbind /dev dev; mount -t tmpfs -o mode=755 run run
mount -t cgroup2 cgroup2 sys/fs/cgroup
pivot_root . .; umount -l .
shift; exec /usr/bin/env -i "$@"'
# Run in there: ./demo (and ./test), timed; the sandboxes down on the way out.
run='set -e; cd /srv/multinode
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" "BEGIN {printf \"%.1f s\", b - a}"; }
trap "exit 143" TERM; trap "exit 130" INT
trap "[ ! -x .venv/bin/fab ] || uv run fab sandbox.down || echo fresh_debian: sandbox.down failed >&2" EXIT
t=$(date +%s.%N); ./demo; echo "fresh_debian: ./demo from the fresh root: $(elapsed "$t")"
if [ "$1" = --test ]; then
    uv run fab sandbox.down >/dev/null
    t=$(date +%s.%N); ./test; echo "fresh_debian: ./test after it: $(elapsed "$t")"
fi'
setsid unshare --mount --propagation private bash -c "$boot" boot "$root" "${env[@]}" bash -c "$run" run "$run_test" &
session=$!
rc=0
wait "$session" || rc=$?
session=""
exit "$rc"
