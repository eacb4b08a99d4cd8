#!/bin/sh
# Per-run overhead of the elevated tier next to the unelevated tier, as an unprivileged user.
#
#   sudo sh bench/elevated.sh [STOCKADE_BINARY] [RUNS]
#
# As root it: copies the binary to a world-readable place, installs the elevated tier
# (`stockade setup`), starts the broker in the foreground (`stockade broker &`), creates a
# throw-away user `stkbench` with a git workspace in its home, and runs hyperfine as that user on
#   stockade run --tier elevated   --workspace WS -- /bin/true   (offline: the nft check runs)
#   stockade run --tier elevated   --network on ... -- /bin/true (no nft check)
#   stockade run --tier unelevated --workspace WS -- /bin/true
# back to back, then the offline and unelevated runs again 0.3 s apart (`--prepare 'sleep 0.3'`).
# Then it stops the broker, uninstalls and removes the user, even on failure.
# Needs: hyperfine, nft, useradd, setpriv; no existing installation (/var/lib/stockade).
set -eu
BIN=${1:-target/release/stockade}
RUNS=${2:-300}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
[ ! -e /var/lib/stockade/install.json ] || { echo "an installation exists; refusing" >&2; exit 2; }
DIR=$(mktemp -d /opt/stkbench.XXXXXX)
chmod 755 "$DIR"
cp "$BIN" "$DIR/stockade"
chmod 755 "$DIR/stockade"
S="$DIR/stockade"
BROKER=
cleanup() {
    set +e
    if [ -n "$BROKER" ]; then
        kill "$BROKER" 2>/dev/null
        wait "$BROKER" 2>/dev/null
    fi
    "$S" uninstall >/dev/null 2>&1 || true
    userdel -r -f stkbench 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
"$S" setup >/dev/null
"$S" broker >/dev/null 2>&1 &
BROKER=$!
i=0
while [ ! -S /run/stockade/broker.sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
useradd -m -s /bin/sh stkbench
WS=/home/stkbench/ws
setpriv --reuid stkbench --regid stkbench --init-groups sh -c "mkdir $WS && git init -q $WS"
as_user() { setpriv --reuid stkbench --regid stkbench --init-groups env -i PATH=/usr/bin:/bin HOME=/home/stkbench "$@"; }
# One run first: the first run grants the workspace's ACLs (a walk), later runs do not.
as_user "$S" run --tier elevated --workspace $WS -- /bin/true
as_user "$S" run --tier elevated --network on --workspace $WS -- /bin/true
as_user hyperfine -N --warmup 20 --runs "$RUNS" \
    -n bare "/bin/true" \
    -n elevated-offline "$S run --tier elevated --workspace $WS -- /bin/true" \
    -n elevated-online "$S run --tier elevated --network on --workspace $WS -- /bin/true" \
    -n unelevated "$S run --tier unelevated --workspace $WS -- /bin/true"
# Spaced runs (0.3 s apart, as an agent issues commands): kernel paths that are fast only when
# warm (e.g. moving a process into a cgroup waits for an RCU grace period) show up here.
as_user hyperfine -N --prepare "sleep 0.3" --runs 30 \
    -n spaced-elevated-offline "$S run --tier elevated --workspace $WS -- /bin/true" \
    -n spaced-unelevated "$S run --tier unelevated --workspace $WS -- /bin/true"
