#!/usr/bin/env bash
# Builds SecuMon's Debian packages and the agent's release tarball from this checkout:
#   postgresql-15-secumon_<version>-<rev>_<arch>.deb   the extension: secumon.so, secumon.control,
#                                                      every install and update script
#   secumon-agent_<version>-<rev>_<arch>.deb           the agent, its systemd unit, its config
#   secumon-agent-<version>-<rust host triple>.tar.gz  the agent for hosts without dpkg
#   SHA256SUMS
# into target/packages/ (or --out DIR). Release build by default; --debug builds the debug
# profile instead (faster; for tests, never to ship). scripts/bootstrap.sh runs first, so a
# clean checkout on Debian 12 needs nothing else; --no-bootstrap skips it.
#
# How: the extension is staged by scripts/install-extension.sh --stage (cargo pgrx package plus
# the generated update scripts, the same files a source install gets), the agent by cargo build;
# each package tree is assembled under a temporary debian/<package>/ and packed by dpkg-deb
# (dependencies from dpkg-shlibdeps). No debian/ source package, cargo-deb or debhelper: see
# docs/install.md ("Building the packages") for why.
#
#   usage: scripts/build-packages.sh [--debug] [--out DIR] [--no-bootstrap] [pg_config]
#   environment: DEB_REVISION (default 1), DEBFULLNAME and DEBEMAIL (the Maintainer field),
#                SOURCE_DATE_EPOCH (file times; default: the last commit's), CARGO_TARGET_DIR
set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PACKAGING=$REPO/packaging
release=1
bootstrap=1
out=$REPO/target/packages
while (($#)); do
    case $1 in
        --debug) release=; shift ;;
        --out)
            [[ -n ${2:-} ]] || { echo "build-packages: --out needs a directory" >&2; exit 2; }
            out=$2; shift 2 ;;
        --no-bootstrap) bootstrap=; shift ;;
        -h|--help) sed -n 's/^#   usage: //p' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "build-packages: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
PG_CONFIG=${1:-/usr/bin/pg_config}

say() { printf 'build-packages: %s\n' "$*"; }
die() { printf 'build-packages: error: %s\n' "$*" >&2; exit 1; }

if [[ -n $bootstrap ]]; then
    "$REPO/scripts/bootstrap.sh"
fi
command -v cargo >/dev/null 2>&1 || export PATH="$HOME/.cargo/bin:$PATH"
for tool in dpkg-deb dpkg-shlibdeps strip python3 gzip tar; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (scripts/bootstrap.sh installs it)"
done

version=$(awk '/^\[workspace\.package\]/ { w = 1; next } /^\[/ { w = 0 }
               w && /^version *=/ { gsub(/^version *= *"|".*$/, ""); print; exit }' "$REPO/Cargo.toml")
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "cannot read the version from Cargo.toml"
deb_version=$version-${DEB_REVISION:-1}
arch=$(dpkg --print-architecture)
pg_major=$("$PG_CONFIG" --version | sed -n 's/^PostgreSQL \([0-9][0-9]*\).*/\1/p')
[[ -n $pg_major ]] || die "cannot read the PostgreSQL version from $PG_CONFIG --version"
libdir=$("$PG_CONFIG" --pkglibdir)
extdir="$("$PG_CONFIG" --sharedir)/extension"
[[ $libdir == /usr/lib/postgresql/$pg_major/lib ]] \
    || die "$PG_CONFIG is not Debian's PostgreSQL $pg_major (pkglibdir $libdir)"
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
first_year=$(git -C "$REPO" log --reverse --format=%ad --date=format:%Y 2>/dev/null | head -n 1 || true)
last_year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
years=${first_year:-$last_year}
[[ $years == "$last_year" ]] || years=$years-$last_year
maintainer="${DEBFULLNAME:-SecuMon maintainers} <${DEBEMAIL:-maintainers@secumon.example}>"
if [[ -n $release ]]; then
    profile=release cargo_profile=(--release) ext_profile=(--release) compress=(-Zxz)
else
    profile=debug cargo_profile=() ext_profile=() compress=(-Zgzip -z1)
fi
target_dir=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debian"
touch "$work/debian/control" # dpkg-shlibdeps wants one; the packages' own are written below

# fill TEMPLATE: substitutes the @NAME@ placeholders of a packaging file.
fill() {
    sed -e "s|@PG_MAJOR@|$pg_major|g" -e "s|@DEB_VERSION@|$deb_version|g" \
        -e "s|@ARCH@|$arch|g" -e "s|@MAINTAINER@|$maintainer|g" \
        -e "s|@INSTALLED_SIZE@|${installed_size:-0}|g" -e "s|@SHLIBS@|${shlibs:-}|g" \
        -e "s|@YEARS@|$years|g" -e "s|@VERSION@|$version|g" \
        -e "s|@DATE@|$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)|g" "$1"
}

# docs PACKAGE ROOT: copyright and changelogs, as Debian policy wants them.
docs() {
    local package=$1 root=$2 doc=$2/usr/share/doc/$1 date
    install -d "$doc"
    fill "$PACKAGING/copyright" >"$doc/copyright"
    chmod 644 "$doc/copyright"
    gzip -9nc "$REPO/CHANGELOG.md" >"$doc/changelog.gz"
    date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
    printf '%s\n' "secumon ($deb_version) bookworm; urgency=medium" "" \
        "  * SecuMon $version, built by scripts/build-packages.sh; the changes of this" \
        "    release are in changelog.gz." "" " -- $maintainer  $date" \
        | gzip -9n >"$doc/changelog.Debian.gz"
}

# strip_binary FILE: what dh_strip does.
strip_binary() {
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$1"
}

# pack PACKAGE TEMPLATE_DIR ELF_FILE...: control file (dependencies of the ELF files from
# dpkg-shlibdeps), md5sums, times, permissions; then dpkg-deb.
pack() {
    local package=$1 template=$2 root=$work/debian/$1 deb file
    shift 2
    local elf=()
    for file in "$@"; do elf+=("-e$root$file"); done
    find "$root" -type d -exec chmod 755 {} +
    shlibs=$(cd "$work" && dpkg-shlibdeps -O "${elf[@]}" | sed -n 's/^shlibs:Depends=//p')
    [[ -n $shlibs ]] || die "dpkg-shlibdeps found no dependencies of $*"
    installed_size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
    fill "$PACKAGING/$template/control.in" >"$root/DEBIAN/control"
    (cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z \
        | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
    chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    deb=$out/${package}_${deb_version}_${arch}.deb
    dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
    say "$(basename "$deb") ($(du -h "$deb" | cut -f1))"
}

# --- the extension -------------------------------------------------------------------------
ext_package=postgresql-$pg_major-secumon
ext_root=$work/debian/$ext_package
say "building the extension ($profile) and staging it (scripts/install-extension.sh --stage)"
"$REPO/scripts/install-extension.sh" "${ext_profile[@]}" --stage "$work/extension-stage" "$PG_CONFIG"
stage=$work/extension-stage
[[ -f $stage$libdir/secumon.so && -f $stage$extdir/secumon.control ]] \
    || die "the staged extension lacks secumon.so or secumon.control"
control_version=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$stage$extdir/secumon.control")
[[ $control_version == "$version" ]] \
    || die "secumon.control says default_version $control_version, Cargo.toml $version"
[[ -f $stage$extdir/secumon--$version.sql ]] || die "no install script secumon--$version.sql"
install -d "$ext_root$libdir" "$ext_root$extdir" "$ext_root/DEBIAN"
install -m 644 "$stage$libdir/secumon.so" "$ext_root$libdir/"
strip_binary "$ext_root$libdir/secumon.so"
install -m 644 "$stage$extdir"/secumon* "$ext_root$extdir/"
docs "$ext_package" "$ext_root"
fill "$PACKAGING/extension/README.Debian" >"$ext_root/usr/share/doc/$ext_package/README.Debian"
install -d "$ext_root/usr/share/lintian/overrides"
fill "$PACKAGING/extension/lintian-overrides" >"$ext_root/usr/share/lintian/overrides/$ext_package"
for script in postinst prerm; do
    fill "$PACKAGING/extension/$script" >"$ext_root/DEBIAN/$script"
    chmod 755 "$ext_root/DEBIAN/$script"
done
pack "$ext_package" extension "$libdir/secumon.so"
say "  $(cd "$ext_root$extdir" && echo secumon*)"

# --- the agent -----------------------------------------------------------------------------
agent_root=$work/debian/secumon-agent
say "building secumon-agent ($profile)"
(cd "$REPO" && cargo build "${cargo_profile[@]}" --locked -p secumon-agent --quiet)
agent_bin=$target_dir/$profile/secumon-agent
unit=$REPO/agent/secumon-agent.service
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
[[ $exec_start == /usr/bin/secumon-agent ]] || die "the unit's ExecStart runs $exec_start, not /usr/bin/secumon-agent"
install -d "$agent_root/DEBIAN" "$agent_root/etc/secumon" "$agent_root/usr/share/lintian/overrides"
install -D -m 755 "$agent_bin" "$agent_root/usr/bin/secumon-agent"
strip_binary "$agent_root/usr/bin/secumon-agent"
install -D -m 644 "$unit" "$agent_root/lib/systemd/system/secumon-agent.service"
install -m 600 "$REPO/agent/agent.example.toml" "$agent_root/etc/secumon/agent.toml"
docs secumon-agent "$agent_root"
install -m 644 "$REPO/agent/agent.example.toml" "$agent_root/usr/share/doc/secumon-agent/agent.example.toml"
fill "$PACKAGING/agent/lintian-overrides" >"$agent_root/usr/share/lintian/overrides/secumon-agent"
install -d "$agent_root/usr/share/man/man8"
fill "$PACKAGING/agent/secumon-agent.8" | gzip -9n >"$agent_root/usr/share/man/man8/secumon-agent.8.gz"
chmod 644 "$agent_root/usr/share/man/man8/secumon-agent.8.gz"
for doc in $(sed -n 's|^Documentation=.*file://\([^ ]*\).*|\1|p' "$unit"); do
    [[ -f $agent_root$doc ]] || die "the unit's Documentation= names $doc, which the package lacks"
done
install -m 644 "$PACKAGING/agent/conffiles" "$agent_root/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 755 "$PACKAGING/agent/$script" "$agent_root/DEBIAN/$script"
done
pack secumon-agent agent /usr/bin/secumon-agent

# --- the agent's release tarball -----------------------------------------------------------
triple=$(rustc -vV | sed -n 's/^host: //p')
name=secumon-agent-$version-$triple
tree=$work/tarball/$name
install -d "$tree"
install -m 755 "$agent_root/usr/bin/secumon-agent" "$tree/secumon-agent"
install -m 644 "$REPO/agent/agent.example.toml" "$tree/agent.example.toml"
install -m 644 "$REPO/CHANGELOG.md" "$tree/CHANGELOG.md"
fill "$PACKAGING/copyright" >"$tree/COPYRIGHT"
{
    echo "# systemd unit for secumon-agent installed from the release tarball (see INSTALL)."
    sed -e '/^\[Unit\]/,$!d' -e 's|/usr/bin/secumon-agent|/usr/local/bin/secumon-agent|' \
        -e 's|/usr/share/doc/secumon-agent|/usr/local/share/doc/secumon-agent|' "$unit"
} >"$tree/secumon-agent.service"
chmod 644 "$tree/secumon-agent.service"
agent_shlibs=$shlibs
cat >"$tree/INSTALL" <<EOF
secumon-agent $version for $triple: one binary, libpq built in.
It needs these shared libraries (Debian package names): $agent_shlibs
(any glibc Linux with OpenSSL 3). Check it with: ./secumon-agent --version

As root:
  install -m 755 secumon-agent /usr/local/bin/
  install -D -m 644 agent.example.toml /usr/local/share/doc/secumon-agent/agent.example.toml
  useradd --system --user-group --home-dir /var/lib/secumon-agent --no-create-home \\
          --shell /usr/sbin/nologin secumon
  install -d -m 755 /etc/secumon
  install -m 600 -o secumon -g secumon agent.example.toml /etc/secumon/agent.toml
  \$EDITOR /etc/secumon/agent.toml        # set database = "host=... dbname=... user=..."
  install -m 644 secumon-agent.service /etc/systemd/system/
  systemctl daemon-reload && systemctl enable --now secumon-agent

First check on a new host, touching no database: secumon-agent --once --dry-run
Every setting: agent.example.toml. Changes: CHANGELOG.md.
EOF
find "$tree" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
tar -C "$work/tarball" --sort=name --owner=0 --group=0 --numeric-owner -cf - "$name" \
    | gzip -9n >"$out/$name.tar.gz"
say "$name.tar.gz ($(du -h "$out/$name.tar.gz" | cut -f1))"

(cd "$out" && sha256sum "${ext_package}_${deb_version}_${arch}.deb" \
    "secumon-agent_${deb_version}_${arch}.deb" "$name.tar.gz" >SHA256SUMS)
say "done: $out ($profile build)"
