#!/bin/sh
# Builds tapegrad and runs the benchmark suite against PyTorch: tapegrad's
# and PyTorch's sides alternate, and run.py prints the table of medians and
# ratios. Options are passed on to run.py (see bench/run.py --help). The
# build directory is ./build unless --build-dir DIR comes first.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
build_dir="$here/../build"
if [ "${1:-}" = "--build-dir" ]; then
    build_dir=$2
    shift 2
fi

if [ ! -d "$build_dir" ]; then
    meson setup "$build_dir" "$here/.." >&2
fi
ninja -C "$build_dir" bench/tapegrad_bench >&2
exec /usr/bin/python3 "$here/run.py" --tapegrad-bench "$build_dir/bench/tapegrad_bench" "$@"
