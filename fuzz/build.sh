#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into fuzz/build/ (or $FUZZ_BUILD).
# Not part of the Meson build, so normal builds do not need clang.
#
# Needs Debian's clang and libclang-rt-14-dev (apt-get install clang-14
# libclang-rt-14-dev), plus the library's own build dependencies (uthash-dev,
# zlib1g-dev). The library is compiled into the targets with
# -fsanitize=fuzzer-no-link,address,undefined and without BLAS, so the
# portable matrix kernel is instrumented too.
#
# Usage: fuzz/build.sh [TARGET...]   (default: every target)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${FUZZ_BUILD:-$here/build}
cc=${CC_FUZZ:-clang}

all_targets=(fuzz_expr fuzz_idx fuzz_csv fuzz_safetensors fuzz_ops)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${all_targets[@]}")
fi

if ! command -v "$cc" >/dev/null; then
    echo "build.sh: $cc not found; install clang-14 and libclang-rt-14-dev" >&2
    exit 1
fi

# -fno-sanitize-recover turns every UBSan report into a crash the fuzzer
# keeps; -O1 keeps the reports readable and the run fast enough.
sanitize=(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
common=(-g -O1 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra
        -Wno-unused-parameter "${sanitize[@]}"
        -I"$root/autograd/include" -I"$root/nn/include")

mkdir -p "$out/obj"

# The library: every autograd and nn source, instrumented for coverage.
lib_objects=()
for src in "$root"/autograd/src/*.c "$root"/nn/src/*.c; do
    obj="$out/obj/$(basename "$(dirname "$(dirname "$src")")")_$(basename "$src" .c).o"
    "$cc" "${common[@]}" -fsanitize=fuzzer-no-link -I"$root/autograd/src" \
        -c "$src" -o "$obj"
    lib_objects+=("$obj")
done

# The CLI's expression parser, evaluator, binding parser and number
# formatting (which the evaluator uses), for fuzz_expr.
tool_objects=()
for name in expr_parse expr_eval bindings print; do
    obj="$out/obj/tools_$name.o"
    "$cc" "${common[@]}" -fsanitize=fuzzer-no-link -c "$root/tools/$name.c" -o "$obj"
    tool_objects+=("$obj")
done

for target in "${targets[@]}"; do
    extra=()
    if [ "$target" = fuzz_expr ]; then
        extra=(-I"$root/tools" "${tool_objects[@]}")
    fi
    # memfd_create in fuzz_file.h is a GNU extension.
    "$cc" "${common[@]}" -D_GNU_SOURCE -fsanitize=fuzzer "$here/$target.c" \
        "${extra[@]}" "${lib_objects[@]}" -lz -lm -lpthread -o "$out/$target"
    echo "built $out/$target"
done
