#!/usr/bin/env bash
# Builds the extension and installs it into the PostgreSQL that pg_config names, replacing each
# file by rename: a server running the previous secumon.so keeps its mapped copy instead of
# crashing (copying over a mapped library in place makes its processes die with SIGBUS).
# Writes the update scripts from every earlier release (scripts/make-update-scripts.py) and
# also installs the install scripts of released versions kept in secumon_pg/sql/, so that
# `CREATE EXTENSION secumon VERSION '0.1.0'` works, as the upgrade test needs.
#
# With --stage DIR nothing is installed: DIR receives the same files under their installed
# paths (DIR/usr/lib/postgresql/15/lib/secumon.so, DIR/usr/share/postgresql/15/extension/...),
# which is what scripts/build-packages.sh packs into postgresql-15-secumon.
#   usage: scripts/install-extension.sh [--release] [--stage DIR] [pg_config]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
profile=(--debug)
stage_only=
while (($#)); do
    case $1 in
        --release) profile=(); shift ;;
        --stage)
            [[ -n ${2:-} ]] || { echo "install-extension: --stage needs a directory" >&2; exit 2; }
            stage_only=$2; shift 2 ;;
        -h|--help) sed -n 's/^#   usage: //p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "install-extension: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
PG_CONFIG=${1:-/usr/bin/pg_config}
libdir=$("$PG_CONFIG" --pkglibdir)
extdir="$("$PG_CONFIG" --sharedir)/extension"

# stage DIR: builds into DIR the tree of every file the extension installs.
stage() {
    local dir=$1 version
    (cd "$REPO/secumon_pg" && cargo pgrx package "${profile[@]}" --pg-config "$PG_CONFIG" --out-dir "$dir" >/dev/null)
    version=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$dir$extdir/secumon.control")
    python3 "$REPO/scripts/make-update-scripts.py" "$dir$extdir/secumon--$version.sql" "$REPO/sql/updates"
    # Install scripts of released versions, the baselines of upgrades (kept as released).
    install -m 644 "$REPO"/secumon_pg/sql/secumon--*.sql "$dir$extdir/"
}

if [[ -n $stage_only ]]; then
    mkdir -p "$stage_only"
    stage "$(cd "$stage_only" && pwd)"
    echo "install-extension: secumon staged in $stage_only"
    exit 0
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
stage "$stage"

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

place "$stage$libdir/secumon.so" "$libdir"
for file in "$stage$extdir"/secumon*; do
    place "$file" "$extdir"
done
echo "install-extension: secumon installed into $libdir and $extdir"
