#!/bin/sh
# The shared escape battery through the elevated tier, run by a throw-away unprivileged user:
# setup, a foreground broker (no systemd here), `stockade run --tier elevated`, then uninstall.
# Usage (root): sh .ci/elevated-battery.sh [STOCKADE_BINARY] [BATTERY_PY]
set -eu
BIN=$(readlink -f "${1:-target/release/stockade}")
BATTERY=$(readlink -f "${2:-../shared/battery/battery.py}")
[ -x "$BIN" ] || { echo "$BIN is not built (cargo build --release)" >&2; exit 2; }
[ -f "$BATTERY" ] || { echo "$BATTERY not found" >&2; exit 2; }
[ ! -e /var/lib/stockade/install.json ] || { echo "an elevated installation exists; refusing to touch it" >&2; exit 2; }
# The sandbox accounts must be able to execute the binary: copy it to a world-readable place.
DIR=$(mktemp -d /opt/stockade-battery.XXXXXX); chmod 755 "$DIR"
cp "$BIN" "$DIR/stockade"; chmod 755 "$DIR/stockade"
cp "$BATTERY" "$DIR/battery.py"; chmod 644 "$DIR/battery.py"
S="$DIR/stockade"; BROKER=; U=stkbattery
cleanup() {
  set +e
  [ -n "$BROKER" ] && { kill "$BROKER"; wait "$BROKER"; }
  "$S" uninstall >/dev/null 2>&1
  userdel -r -f "$U" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
"$S" setup >/dev/null
"$S" broker >/dev/null 2>&1 & BROKER=$!
i=0; while [ ! -S /run/stockade/broker.sock ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
userdel -r -f "$U" 2>/dev/null || true
useradd -m -s /bin/sh "$U"
setpriv --reuid "$U" --regid "$U" --init-groups env -i PATH=/usr/bin:/bin HOME=/home/$U BATTERY_ROOT=/home/$U/runs \
  python3 "$DIR/battery.py" --runner "$S run --tier elevated --workspace {ws} -- sh -c {cmd}"
