#!/usr/bin/env bash
# Makes a fresh Debian 12 machine ready to build and test SecuMon; skips whatever is present.
#   - Debian packages: PostgreSQL 15 (server, headers, contrib), clang/libclang (pgrx bindgen),
#     pkg-config, OpenSSL and libpq headers, sudo, python3-aiosmtpd (SMTP receiver in tests);
#     for the .deb packages (scripts/build-packages.sh) and their test: dpkg-dev
#     (dpkg-shlibdeps), binutils (strip), adduser (the agent package depends on it), lintian,
#     systemd (systemd-analyze verify/security; nothing needs systemd running)
#   - cargo-pgrx 0.18.1 and `cargo pgrx init --pg15 /usr/bin/pg_config`
# Safe to re-run; works without a terminal (CI=true, no stdin).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PGRX_VERSION=0.18.1
PG_CONFIG=/usr/bin/pg_config
PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib-15 libclang-dev clang
          pkg-config libssl-dev libpq-dev sudo python3-aiosmtpd
          dpkg-dev binutils adduser lintian systemd)

say() { printf 'bootstrap: %s\n' "$*"; }

as_root() {
    if [[ $EUID -eq 0 ]]; then "$@"; else sudo -n "$@"; fi
}

# Installed, or provided by an installed package (postgresql-contrib-15 is provided by postgresql-15).
installed() {
    dpkg-query -W -f='${db:Status-Abbrev}\n' "$1" 2>/dev/null | grep -q '^ii' && return 0
    dpkg-query -W -f='${db:Status-Abbrev} ${Provides}\n' 2>/dev/null \
        | awk '$1 == "ii"' | grep -Eq "[ ,]$1([ ,(]|$)"
}

missing=()
for package in "${PACKAGES[@]}"; do
    installed "$package" || missing+=("$package")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    as_root apt-get update -qq </dev/null
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
else
    say "Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        say "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
        exit 1
    fi
fi

if cargo clippy --version >/dev/null 2>&1; then
    say "clippy present"
else
    say "installing clippy (rustup component add clippy)"
    rustup component add clippy
fi

if cargo pgrx --version 2>/dev/null | grep -qx "cargo-pgrx $PGRX_VERSION"; then
    say "cargo-pgrx $PGRX_VERSION present"
else
    say "installing cargo-pgrx $PGRX_VERSION (takes a few minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet </dev/null
fi

pgrx_config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
if [[ -f $pgrx_config ]] && grep -Eq '^[[:space:]]*pg15[[:space:]]*=' "$pgrx_config"; then
    say "pgrx knows pg15"
else
    say "cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG" </dev/null >/dev/null
fi
