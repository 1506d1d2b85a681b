#!/usr/bin/env bash
# Runs every SecuMon test suite, in this order:
#   1. plain unit tests of the workspace (agent and helper crates; no PostgreSQL needed), and
#      clippy over the workspace with warnings as errors (every unsafe block says why it is sound)
#   2. the extension's #[pg_test]s (`cargo pgrx test pg15`, its own temporary cluster)
#   3. installs the extension (debug build) into the system PostgreSQL 15 and builds the agent
#   4. the isolation specs (tests/isolation: pg_isolation_regress on a temporary cluster with
#      the extension of step 3, scripts/isolation.sh)
#   5. the end-to-end suite (tests/): real clusters, real agent, loopback only; then the suites
#      whose answers must not depend on the storage backend again on the timescaledb backend
#      (SECUMON_TEST_BACKEND=timescaledb; TimescaleDB 2.28.3 built by
#      ../shared/timescaledb/install.sh, which step 3 runs)
#   6. the Debian packages (tests/tests/packages.rs): scripts/build-packages.sh --debug from a
#      fresh copy of the checkout, lintian, dpkg -i, CREATE EXTENSION from the packaged library,
#      the packaged agent run as its unit says, systemd-analyze, dpkg -r / -P, reinstall
# Exits non-zero if anything failed and ends with one summary line.
#
# Step 2 installs a test build of the extension into the system PostgreSQL dirs; step 3
# overwrites it with the normal build the isolation specs and the end-to-end suite need. Keep
# that order. Step 6 changes the system (packages, the `secumon` user), so it runs last; it
# purges its packages and puts back the extension files of step 3 when it ends.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PG_CONFIG=/usr/bin/pg_config
PGRX_TEST_DATA=$REPO/target/pgrx-test-data

"$REPO/scripts/bootstrap.sh"

results=()
failed=()
declare -A status

# step <id> <description> <command...>: runs one step, records its outcome, never aborts.
step() {
    local id=$1 what=$2
    shift 2
    local started=$SECONDS
    printf '\n==> %s\n' "$what"
    if "$@"; then
        status[$id]=ok
        results+=("ok      $what ($((SECONDS - started)) s)")
    else
        status[$id]=failed
        failed+=("$what")
        results+=("FAILED  $what ($((SECONDS - started)) s)")
    fi
}

skip() {
    local id=$1 what=$2 reason=$3
    status[$id]=skipped
    failed+=("$what (skipped: $reason)")
    results+=("SKIPPED $what ($reason)")
}

run_pg_tests() {
    # cargo pgrx test runs its cluster as postgres (PostgreSQL refuses root); the data dir must
    # be writable by that user, and every parent traversable.
    mkdir -p "$PGRX_TEST_DATA"
    if [[ $EUID -eq 0 ]]; then
        chown postgres:postgres "$PGRX_TEST_DATA"
        (cd secumon_pg && cargo pgrx test pg15 --runas postgres --pgdata "$PGRX_TEST_DATA")
    else
        (cd secumon_pg && cargo pgrx test pg15)
    fi
}

install_extension() {
    "$REPO/scripts/install-extension.sh" "$PG_CONFIG"
}

# TimescaleDB for the timescaledb backend's tests (tests/tests/timescaledb.rs and the matrix
# below); idempotent.
install_timescaledb() {
    PG_CONFIG=$PG_CONFIG "$REPO/../shared/timescaledb/install.sh"
}

# The suites whose answers must not depend on the storage backend, run again on TimescaleDB
# (the others test the partitions backend itself, the upgrade from 0.1.0, the packages, or
# start their own TimescaleDB clusters: tests/tests/timescaledb.rs).
TIMESCALEDB_SUITES=(--test storage --test alerts --test custom_series --test tenancy --test dump_restore
                    --test operations --test auth --test agent_reports --test agent_inputs --test enroll)

step unit "unit tests (workspace without secumon, secumon-e2e)" \
    cargo test --workspace --exclude secumon --exclude secumon-e2e --no-fail-fast
step clippy "clippy, warnings as errors (cargo clippy --workspace --all-targets)" \
    cargo clippy --workspace --all-targets -- -D warnings
step pgtest "extension #[pg_test]s (cargo pgrx test pg15)" run_pg_tests
step install "install the extension for the e2e suite (scripts/install-extension.sh, debug)" install_extension
step timescaledb "install TimescaleDB 2.28.3 (../shared/timescaledb/install.sh)" install_timescaledb
step agent "build secumon-agent (debug)" cargo build -p secumon-agent
if [[ ${status[install]} == ok ]]; then
    step isolation "isolation specs (tests/isolation, pg_isolation_regress)" "$REPO/scripts/isolation.sh"
else
    skip isolation "isolation specs (tests/isolation, pg_isolation_regress)" "needs the installed extension"
fi
if [[ ${status[install]} == ok && ${status[agent]} == ok ]]; then
    step e2e "end-to-end tests (secumon-e2e)" cargo test -p secumon-e2e --no-fail-fast -- --test-threads=2
else
    skip e2e "end-to-end tests (secumon-e2e)" "needs the installed extension and the agent binary"
fi
if [[ ${status[install]} == ok && ${status[agent]} == ok && ${status[timescaledb]} == ok ]]; then
    step e2e_timescaledb "the backend-independent suites on the timescaledb backend" \
        env SECUMON_TEST_BACKEND=timescaledb cargo test -p secumon-e2e --no-fail-fast "${TIMESCALEDB_SUITES[@]}" -- --test-threads=2
else
    skip e2e_timescaledb "the backend-independent suites on the timescaledb backend" "needs the installed extension, TimescaleDB and the agent binary"
fi
step packages "Debian packages: build from a fresh copy (debug), lintian, dpkg -i/-r/-P, reinstall" \
    cargo test -p secumon-e2e --test packages --no-fail-fast -- --ignored

printf '\n==> summary\n'
printf '  %s\n' "${results[@]}"
if ((${#failed[@]})); then
    joined=$(printf '%s; ' "${failed[@]}")
    printf 'test.sh: FAILED — %s\n' "${joined%; }"
    exit 1
fi
printf 'test.sh: PASSED — all %d steps ok\n' "${#results[@]}"
