#!/usr/bin/env bash
# Mutation testing of one core module against its own test files.
#
#   bash tests/mutation/run.sh routing            # every mutant of tests/mutation/routing.toml
#   SAMPLE=30 bash tests/mutation/run.sh routing  # a seeded sample of 30 (SEED=0 by default)
#   bash tests/mutation/run.sh routing --report   # survivors of the last run
#
# Run from the repository root of a scratch copy: cosmic-ray edits the module
# on disk while a mutant is tested (and restores it afterwards).
set -euo pipefail
name="$1"
config="tests/mutation/${name}.toml"
session="${MUTATION_DIR:-.mutation}/${name}.sqlite"
mkdir -p "$(dirname "$session")"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/jaxcache}"
if [[ "${2:-}" != "--report" ]]; then
  rm -f "$session"
  cosmic-ray init "$config" "$session"
  cr-filter-operators "$session" "$config"
  if [[ -n "${SAMPLE:-}" ]]; then
    python tests/mutation/sample.py "$session" "$SAMPLE" "${SEED:-0}"
  fi
  cosmic-ray exec "$config" "$session"
fi
cr-report --surviving-only --show-diff "$session"
