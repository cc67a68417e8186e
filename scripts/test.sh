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
cargo test --workspace --locked
