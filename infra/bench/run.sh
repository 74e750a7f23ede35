#!/usr/bin/env bash
# Builds the hello-world baseline and every function binary (release profile,
# one target directory), then runs the cold start benchmark and prints its
# Markdown table (docs/PERFORMANCE.md explains the method).
#
#   infra/bench/run.sh [harness options]          build, then measure everything
#   infra/bench/run.sh --annotate BINARY          also build BINARY and the baseline
#                                                 with symbols (-C strip=none, separate target dir),
#                                                 profile them and print the top
#                                                 inclusive costs (callgrind_annotate)
#
# Harness options (see `coldstart --help`): --runs N, --callgrind-runs N,
# --only lambent-health,lambent-chat, --env NAME=VALUE, --profile-dir DIR, --zip-dir DIR.
#
# Environment:
#   CARGO_TARGET_DIR     where to build (default: target)
#   LAMBENT_BENCH_MOTO   the moto_server executable (default: moto_server on PATH,
#                        else ~/.cache/lambent/venv/bin/moto_server)
#   NICE                 niceness of the builds (default 10)
#
# Needs valgrind, python3 and moto (`pip install 'moto[server]'`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
nice_level="${NICE:-10}"

annotate=""
harness_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --annotate) annotate="${2:?--annotate needs a binary name}"; shift 2 ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) harness_args+=("$1"); shift ;;
    esac
done

if [[ -z "${LAMBENT_BENCH_MOTO:-}" ]]; then
    if command -v moto_server >/dev/null; then
        export LAMBENT_BENCH_MOTO="$(command -v moto_server)"
    elif [[ -x "$HOME/.cache/lambent/venv/bin/moto_server" ]]; then
        export LAMBENT_BENCH_MOTO="$HOME/.cache/lambent/venv/bin/moto_server"
    else
        echo "run.sh: no moto_server: pip install 'moto[server]' or set LAMBENT_BENCH_MOTO" >&2
        exit 2
    fi
fi

functions=(authorizer health users keys providers models agents sessions chat usage workflows worker trigger sweeper)
packages=()
for f in "${functions[@]}"; do packages+=(-p "lambent-fn-$f"); done

echo "==> building the baseline and the harness" >&2
# Without the default `flow` feature (flowbench's product dependencies), whose
# features would otherwise grow the baseline.
nice -n "$nice_level" cargo build --release -p lambent-bench --no-default-features --bins
echo "==> building the function binaries" >&2
nice -n "$nice_level" cargo build --release --bins "${packages[@]}"
echo "==> building lambent (for lambent bootstrap)" >&2
nice -n "$nice_level" cargo build -p lambent-local --bin lambent

release="$CARGO_TARGET_DIR/release"
echo "==> measuring" >&2
"$release/coldstart" --release-dir "$release" --lambent "$CARGO_TARGET_DIR/debug/lambent" "${harness_args[@]}"

if [[ -n "$annotate" ]]; then
    # Same code and profile, symbols kept: `-C strip=none` on the final link
    # of the two profiled binaries only, in a separate target directory.
    symbols="$CARGO_TARGET_DIR/bench-symbols"
    package="lambent-fn-${annotate#lambent-}"
    echo "==> building $annotate and the baseline with symbols into $symbols" >&2
    CARGO_TARGET_DIR="$symbols" nice -n "$nice_level" \
        cargo rustc --release -p "$package" --bin "$annotate" -- -C strip=none
    CARGO_TARGET_DIR="$symbols" nice -n "$nice_level" \
        cargo rustc --release -p lambent-bench --no-default-features --bin hello-lambda -- -C strip=none
    profiles="$symbols/profiles"
    "$release/coldstart" --release-dir "$symbols/release" \
        --lambent "$CARGO_TARGET_DIR/debug/lambent" --only "$annotate" \
        --runs 3 --callgrind-runs 1 --profile-dir "$profiles"
    for binary in hello-lambda "$annotate"; do
        echo "==> top inclusive costs: $binary" >&2
        callgrind_annotate --inclusive=yes "$profiles/callgrind.out.$binary" | sed -n "1,80p"
    done
fi
