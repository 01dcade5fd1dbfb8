#!/usr/bin/env bash
# Runs one fuzz target for a given time: fuzz/run.sh TARGET SECONDS
#
# The committed seed corpus (fuzz/corpus/TARGET) is copied into a working
# corpus under fuzz/build/, so new inputs do not end up in git. Crashes,
# leaks, timeouts and out-of-memory inputs are written to
# fuzz/build/artifacts/TARGET/. Builds the target first if it is missing.
# Runs under `nice -n 19`, because fuzzing competes for the CPU.
# Extra arguments after SECONDS are passed to libFuzzer.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: fuzz/run.sh TARGET SECONDS [LIBFUZZER-OPTION...]" >&2
    echo "targets: fuzz_expr fuzz_idx fuzz_csv fuzz_safetensors fuzz_ops" >&2
    exit 2
fi

here=$(cd "$(dirname "$0")" && pwd)
out=${FUZZ_BUILD:-$here/build}
target=$1
seconds=$2
shift 2

if [ ! -f "$here/$target.c" ]; then
    echo "run.sh: no target named '$target' (no fuzz/$target.c)" >&2
    exit 2
fi
case $seconds in
    '' | *[!0-9]*)
        echo "run.sh: SECONDS must be a whole number, not '$seconds'" >&2
        exit 2
        ;;
esac

if [ ! -x "$out/$target" ]; then
    "$here/build.sh" "$target"
fi

corpus="$out/corpus/$target"
artifacts="$out/artifacts/$target"
mkdir -p "$corpus" "$artifacts"
cp -n "$here/corpus/$target"/* "$corpus"/ 2>/dev/null || true

# -timeout: an input that runs longer than 10 s counts as a hang.
# -rss_limit_mb: an input that needs more than 2 GB counts as a failure.
# The sanitizers abort on the first report, so libFuzzer saves the input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
exec nice -n 19 "$out/$target" "$corpus" -max_total_time="$seconds" \
    -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/" \
    -print_final_stats=1 "$@"
