#!/usr/bin/env bash
# The one test command: prepares this machine (idempotent) and runs every test.
# Usage: bash scripts/test.sh            (CI calls exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Packages, a Docker engine and the local test image; steps that cannot work here say so.
bash scripts/setup-test-env.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo fmt --all -- --check
# Unit tests of every crate, the core's purity test, and the black-box suite (one binary).
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# cargo prints one result line per test binary (the last one is often an empty doc-test run);
# end with the total so the closing line says what really ran.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
