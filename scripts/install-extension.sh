#!/usr/bin/env bash
# Builds the extension and installs it into the PostgreSQL that pg_config names, replacing each
# file by rename: a server running the previous secumon.so keeps its mapped copy instead of
# crashing (copying over a mapped library in place makes its processes die with SIGBUS).
# Writes the update scripts from every earlier release (scripts/make-update-scripts.py) and
# also installs the install scripts of released versions kept in secumon_pg/sql/, so that
# `CREATE EXTENSION secumon VERSION '0.1.0'` works, as the upgrade test needs.
#   usage: scripts/install-extension.sh [--release] [pg_config]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
profile=(--debug)
if [[ ${1:-} == --release ]]; then
    profile=()
    shift
fi
PG_CONFIG=${1:-/usr/bin/pg_config}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

(cd "$REPO/secumon_pg" && cargo pgrx package "${profile[@]}" --pg-config "$PG_CONFIG" --out-dir "$stage" >/dev/null)
version=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$stage$("$PG_CONFIG" --sharedir)/extension/secumon.control")
python3 "$REPO/scripts/make-update-scripts.py" "$stage$("$PG_CONFIG" --sharedir)/extension/secumon--$version.sql" "$REPO/sql/updates"

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

# place SOURCE DIR: copy next to the destination, then rename over it.
place() {
    local source=$1 dir=$2 name
    name=$(basename "$source")
    as_root install -m 644 "$source" "$dir/.$name.new"
    as_root mv -f "$dir/.$name.new" "$dir/$name"
}

libdir=$("$PG_CONFIG" --pkglibdir)
extdir="$("$PG_CONFIG" --sharedir)/extension"
place "$stage$libdir/secumon.so" "$libdir"
for file in "$stage$extdir"/secumon* "$REPO"/secumon_pg/sql/secumon--*.sql; do
    place "$file" "$extdir"
done
echo "install-extension: secumon installed into $libdir and $extdir"
