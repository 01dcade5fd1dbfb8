#!/bin/sh
# Builds tapegrad and runs the benchmark suite against PyTorch: tapegrad's
# and PyTorch's sides alternate, and run.py prints the table of medians and
# ratios. Options are passed on to run.py (see bench/run.py --help). The
# build directory is ./build unless --build-dir DIR comes first.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
build_dir="$here/../build"
if [ "${1:-}" = "--build-dir" ]; then
    if [ $# -lt 2 ]; then
        echo "run.sh: --build-dir needs a directory: bench/run.sh --build-dir DIR [OPTION...]" >&2
        exit 2
    fi
    build_dir=$2
    shift 2
fi

# A missing or empty directory is configured; any other must be a build
# directory already.
if [ ! -d "$build_dir" ] || [ -z "$(ls -A "$build_dir")" ]; then
    meson setup "$build_dir" "$here/.." >&2
elif [ ! -f "$build_dir/build.ninja" ]; then
    echo "run.sh: $build_dir is not a Meson build directory; pass an empty or new" \
        "directory, or one made by meson setup" >&2
    exit 2
fi
ninja -C "$build_dir" bench/tapegrad_bench >&2
exec /usr/bin/python3 "$here/run.py" --tapegrad-bench "$build_dir/bench/tapegrad_bench" "$@"
