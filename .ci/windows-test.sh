#!/usr/bin/env bash
# Windows backend check, run by .ci/run on Linux:
#   1. clippy (-D warnings) on the cfg(windows) code with Debian's rust-web-clippy (the rustup
#      clippy of `.ci/run` only sees the Linux cfg);
#   2. cross-builds the Wine self-test (Win32 layer only) and stockade.exe for x86_64-pc-windows-gnu
#      with Debian's rustc-web + rust-web-src (-Zbuild-std) and mingw;
#   3. runs the self-test under Wine 8 in a throw-away prefix.
# Installs nothing: CI provides `rustc-web cargo-web rust-web-clippy rust-web-src gcc-mingw-w64-x86-64 wine64`.
# Exits non-zero on any FAIL line or build failure. Wine does not enforce tokens or DACLs; the
# self-test reports those checks as `unsupported-by-wine`, never as `ok`.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=x86_64-pc-windows-gnu
TDIR=target/windows
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver64
[ -x "$WINESERVER" ] || WINESERVER=/usr/lib/wine/wineserver

missing=()
[ -x /usr/bin/rustc ] || missing+=(rustc-web)
[ -x /usr/bin/cargo ] || missing+=(cargo-web)
[ -x /usr/bin/cargo-clippy ] || missing+=(rust-web-clippy)
[ -d /usr/lib/rustlib/src/rust/library ] || missing+=(rust-web-src)
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(gcc-mingw-w64-x86-64)
[ -x "$WINE" ] || missing+=(wine64)
if [ ${#missing[@]} -gt 0 ]; then
    echo "windows-test: missing ${missing[*]}; install with: apt-get install -y rustc-web cargo-web rust-web-clippy rust-web-src gcc-mingw-w64-x86-64 wine64" >&2
    exit 1
fi
echo "windows-test: $(/usr/bin/rustc --version), $("$WINE" --version 2>/dev/null || echo wine)"

# Debian's cargo must never rewrite the workspace lockfile used by the main (rustup) build.
mkdir -p target
cp Cargo.lock target/windows-Cargo.lock.saved
WINEPREFIX_DIR=""
cleanup() {
    cp "$ROOT/target/windows-Cargo.lock.saved" "$ROOT/Cargo.lock" 2>/dev/null || true
    rm -f "$ROOT/target/windows-Cargo.lock.saved"
    if [ -n "$WINEPREFIX_DIR" ]; then
        WINEPREFIX="$WINEPREFIX_DIR" timeout 30 "$WINESERVER" -k >/dev/null 2>&1 || true
        rm -rf "$WINEPREFIX_DIR"
    fi
}
trap cleanup EXIT

wbuild() {
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 timeout 1200 /usr/bin/cargo build \
        -Zbuild-std=std,panic_abort --target "$TARGET" --target-dir "$TDIR" "$@"
}

failures=0
start=$(date +%s)

# /usr/bin first: a rustup cargo-clippy earlier on PATH would lint with the other toolchain.
echo "windows-test: clippy -D warnings for $TARGET (stockade, stockade-windows with and without policy)"
wclippy() {
    PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 timeout 1200 /usr/bin/cargo clippy \
        -Zbuild-std=std,panic_abort --target "$TARGET" --target-dir "$TDIR" "$@" -- -D warnings
}
if wclippy -p stockade-windows --no-default-features --lib --bins && wclippy -p stockade -p stockade-windows --lib --bins; then
    echo "ok windows-clippy: no clippy finding in the cfg(windows) code"
else
    echo "FAIL windows-clippy: clippy findings for $TARGET (above)"
    failures=$((failures + 1))
fi
echo "windows-test: clippy took $(( $(date +%s) - start ))s"

echo "windows-test: building the Win32 self-test (stockade-windows, no policy feature)"
wbuild -p stockade-windows --no-default-features --bin stockade-wine-selftest
OUT="$TDIR/$TARGET/debug"
mkdir -p "$TDIR/wine"
cp "$OUT/stockade-wine-selftest.exe" "$TDIR/wine/stockade-wine-selftest-core.exe"
SELFTEST="$TDIR/wine/stockade-wine-selftest-core.exe"

echo "windows-test: building stockade.exe and the full self-test (with stockade-policy)"
if wbuild -p stockade -p stockade-windows --bins; then
    cp "$OUT/stockade-wine-selftest.exe" "$TDIR/wine/stockade-wine-selftest.exe"
    SELFTEST="$TDIR/wine/stockade-wine-selftest.exe"
    ls -l "$OUT/stockade.exe"
else
    echo "FAIL build-stockade-exe: stockade.exe (or stockade-policy) does not build for $TARGET; see the errors above"
    failures=$((failures + 1))
fi
echo "windows-test: builds took $(( $(date +%s) - start ))s"

# Wine 8 has no bcryptprimitives.dll; Rust's std needs ProcessPrng from it.
x86_64-w64-mingw32-gcc -shared -O2 -o "$TDIR/wine/bcryptprimitives.dll" crates/windows/wine/bcryptprimitives.c -lbcrypt

WINEPREFIX_DIR=$(mktemp -d /tmp/stockade-wine.XXXXXX)
export WINEPREFIX="$WINEPREFIX_DIR" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
echo "windows-test: wineboot in $WINEPREFIX"
timeout 300 "$WINE" wineboot -i >/dev/null 2>&1 || { echo "FAIL wineboot: wine could not initialise a prefix"; exit 1; }

# A Unix directory symlink planted inside a "root", for the handle-based ACL apply (Wine's
# CreateSymbolicLinkW makes nothing): the self-test must refuse it and any path through it.
LINKDIR=$(mktemp -d /tmp/stockade-link.XXXXXX)
mkdir -p "$LINKDIR/root" "$LINKDIR/outside"
echo keep >"$LINKDIR/outside/victim.txt"
ln -s ../outside "$LINKDIR/root/planted-link"
winpath() { echo "Z:$(echo "$1" | tr '/' '\\')"; }
export STOCKADE_SELFTEST_LINK STOCKADE_SELFTEST_LINK_FILE STOCKADE_SELFTEST_LINK_THROUGH
STOCKADE_SELFTEST_LINK=$(winpath "$LINKDIR/root/planted-link")
STOCKADE_SELFTEST_LINK_FILE=$(winpath "$LINKDIR/outside/victim.txt")
STOCKADE_SELFTEST_LINK_THROUGH=$(winpath "$LINKDIR/root/planted-link/victim.txt")

LOG="$TDIR/wine/selftest.log"
set +e
timeout 300 "$WINE" "$SELFTEST" 2>&1 | tr -d '\r' | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    echo "windows-test: self-test exited with $rc"
    failures=$((failures + 1))
fi
if grep -q '^FAIL ' "$LOG"; then
    failures=$((failures + 1))
fi
rm -rf "$LINKDIR"
grep -q '^ok acl-through-unix-link' "$LOG" || { echo "FAIL acl-through-unix-link: the self-test did not show the planted link refused"; failures=$((failures + 1)); }
grep -Eq '^[0-9]+ passed, [0-9]+ failed' "$LOG" || { echo "FAIL selftest-summary: no summary line (crashed?)"; failures=$((failures + 1)); }

# The integrated binary: starts, and runs one command through the unelevated tier (Wine enforces
# none of it; this checks the CLI -> backend -> Win32 path, not the sandbox).
if [ -f "$OUT/stockade.exe" ] && [ "$SELFTEST" = "$TDIR/wine/stockade-wine-selftest.exe" ]; then
    cp "$TDIR/wine/bcryptprimitives.dll" "$OUT/"
    E2E=$(mktemp -d /tmp/stockade-e2e.XXXXXX)
    WS_WIN="Z:$(echo "$E2E" | tr '/' '\\')"
    EXE_WIN="Z:$(echo "$ROOT/$OUT/stockade.exe" | tr '/' '\\')"
    if timeout 120 "$WINE" "$OUT/stockade.exe" --version >/dev/null 2>&1; then
        echo "ok stockade-exe-starts: stockade.exe --version"
    else
        echo "FAIL stockade-exe-starts: stockade.exe --version failed under Wine"
        failures=$((failures + 1))
    fi
    timeout 120 "$WINE" cmd /c "set HOME=C:\\users\\%USERNAME%&& $EXE_WIN run --workspace $WS_WIN -- cmd /c echo e2e> $WS_WIN\\e2e.txt" >"$TDIR/wine/e2e.log" 2>&1 || true
    if grep -q e2e "$E2E/e2e.txt" 2>/dev/null; then
        echo "ok stockade-exe-run: stockade.exe run (windows-unelevated) ran cmd.exe in the workspace under Wine (not enforced by Wine)"
    else
        echo "FAIL stockade-exe-run: stockade.exe run did not produce the workspace file; log:"
        sed 's/^/  /' "$TDIR/wine/e2e.log" | tail -20
        failures=$((failures + 1))
    fi
    # The run made placeholders for the default protected names missing in the fresh workspace.
    if [ -d "$E2E/.claude" ] && [ -d "$E2E/.git" ] && [ -z "$(ls -A "$E2E/.claude")" ]; then
        echo "ok stockade-exe-placeholders: stockade.exe run created the empty placeholders .git and .claude in the fresh workspace (their DACLs are not enforced by Wine)"
    else
        echo "FAIL stockade-exe-placeholders: no empty .git/.claude placeholder after stockade.exe run: $(ls -A "$E2E" | tr '\n' ' ')"
        failures=$((failures + 1))
    fi
    # `stockade clean` goes through the Windows cleanup path (exact removal of the run's ACEs;
    # Wine stores none of them, so this checks the code path, not the result).
    timeout 120 "$WINE" cmd /c "set HOME=C:\\users\\%USERNAME%&& $EXE_WIN clean --workspace $WS_WIN" >"$TDIR/wine/clean.log" 2>&1 || true
    if grep -q "removed Stockade's ACEs" "$TDIR/wine/clean.log"; then
        echo "ok stockade-exe-clean: stockade.exe clean ran the unelevated ACL cleanup under Wine (Wine stores no ACEs: path only)"
    else
        echo "FAIL stockade-exe-clean: stockade.exe clean did not report the ACL cleanup; log:"
        sed 's/^/  /' "$TDIR/wine/clean.log" | tail -20
        failures=$((failures + 1))
    fi
    if [ ! -e "$E2E/.claude" ] && [ ! -e "$E2E/.git" ]; then
        echo "ok stockade-exe-clean-placeholders: stockade.exe clean removed the empty placeholders it had created"
    else
        echo "FAIL stockade-exe-clean-placeholders: placeholders left after stockade.exe clean: $(ls -A "$E2E" | tr '\n' ' ')"
        failures=$((failures + 1))
    fi
    rm -rf "$E2E"
fi

echo "windows-test: total $(( $(date +%s) - start ))s"
if [ "$failures" -ne 0 ]; then
    echo "windows-test: FAILED"
    exit 1
fi
echo "windows-test: OK"
