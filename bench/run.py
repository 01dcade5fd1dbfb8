#!/usr/bin/python3
"""Run tapegrad's and PyTorch's benchmarks alternately and print the table.

Each round runs tapegrad_bench and then torch_bench.py (the order flips every
round) once per thread count, so slow phases of a busy machine hit both
sides alike. The table shows the median over all repetitions of all rounds,
and the ratio of tapegrad's speed to PyTorch's (above 1: tapegrad is
faster). Only the Python standard library is needed; without PyTorch the
table shows tapegrad's figures alone.
"""

import argparse
import atexit
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
STEP_WORKLOADS = ["regression", "classifier", "mlp", "chain"]
TAPEGRAD_ONLY = ["sgemm", "chain_plain"]

# Targets as minimum ratios of tapegrad's speed to PyTorch's, per thread count.
TARGETS = {
    ("regression", 1): 30, ("regression", 2): 30,
    ("classifier", 1): 30, ("classifier", 2): 30,
    ("mlp", 1): 1.2, ("mlp", 2): 1.4,
    ("epoch", 1): 1.2, ("epoch", 2): 1.4,
}
CHAIN_TARGET = 4.0  # maximum ratio of the chain's gradient cost to its function cost
MAX_REPS = 1000  # the maximum repetitions tapegrad_bench accepts
MAX_THREADS = 256  # the maximum thread count tapegrad_bench accepts
DATA_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tapegrad-bench", default=os.path.join(HERE, "..", "build", "bench",
                                                                   "tapegrad_bench"),
                        help="path of the tapegrad_bench executable (default build/bench/...)")
    parser.add_argument("--threads", default="1,2",
                        help=f"comma-separated thread counts, each 1 to {MAX_THREADS} "
                             "(default 1,2)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating rounds of the step workloads (default 5)")
    parser.add_argument("--epoch-rounds", type=int, default=3,
                        help="alternating rounds of the Fashion-MNIST epoch, 0 to skip it "
                             "(default 3)")
    parser.add_argument("--reps", type=int, default=10,
                        help=f"timed repetitions per workload and round, 1 to {MAX_REPS} "
                             "(default 10)")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                        help="Fashion-MNIST directory (default %(default)s)")
    parser.add_argument("--no-torch", action="store_true", help="run tapegrad only")
    parser.add_argument("--json", metavar="FILE", help="also write every result line to FILE")
    args = parser.parse_args()

    try:
        args.threads_list = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"invalid --threads {args.threads!r}: pass comma-separated "
                     "whole numbers, such as 1,2")
    if any(not 1 <= t <= MAX_THREADS for t in args.threads_list):
        parser.error(f"invalid --threads {args.threads!r}: every count must be 1 to "
                     f"{MAX_THREADS}")
    if args.rounds < 1:
        parser.error(f"invalid --rounds {args.rounds}: pass 1 or more")
    if args.epoch_rounds < 0:
        parser.error(f"invalid --epoch-rounds {args.epoch_rounds}: pass 0 (skip) or more")
    if not 1 <= args.reps <= MAX_REPS:
        parser.error(f"invalid --reps {args.reps}: pass 1 to {MAX_REPS}")
    if not (os.path.isfile(args.tapegrad_bench) and os.access(args.tapegrad_bench, os.X_OK)):
        parser.error(f"{args.tapegrad_bench} is not an executable file; build it with "
                     "`ninja -C build` or run bench/run.sh")
    return args


def side_env(threads, torch_side):
    """Return the environment of one run: the thread count for every pool."""
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    env["OMP_NUM_THREADS"] = str(threads)
    if torch_side:
        # PyTorch's OpenMP threads spin while idle unless waiting is passive.
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def run_side(command, env):
    """Run one side and return its parsed result lines."""
    completed = subprocess.run(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, check=False)
    if completed.returncode != 0:
        sys.exit(f"run.py: {' '.join(command)} failed with status {completed.returncode}:\n"
                 f"{completed.stderr.strip()}")
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


def torch_version():
    """Return torch.__version__, or None when PyTorch cannot be imported."""
    try:
        completed = subprocess.run([PYTHON, "-c", "import torch; print(torch.__version__)"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def cpu_model():
    """Return the CPU model name from /proc/cpuinfo, for the record."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_info(tapegrad_bench):
    """Return how tapegrad_bench was built (its --build-info line)."""
    lines = run_side([tapegrad_bench, "--build-info"], dict(os.environ))
    if not lines or "optimized" not in lines[0]:
        sys.exit(f"run.py: {tapegrad_bench} --build-info printed no build line; "
                 "rebuild it")
    return lines[0]


def build_warnings(build):
    """Return the reasons why these timings do not represent tapegrad."""
    warnings = []
    if not build["optimized"]:
        warnings.append("tapegrad_bench was built without optimisation (configure the "
                        "build directory with --buildtype=release)")
    if build["sanitized"]:
        warnings.append("tapegrad_bench is instrumented by AddressSanitizer")
    if build["blas"].startswith("none"):
        warnings.append("tapegrad_bench was built without OpenBLAS (-Dblas=disabled), so "
                        "it multiplies with the portable kernel and skips sgemm")
    return warnings


def remove_if_present(path):
    """Delete `path` unless it is gone already (a temporary file at exit)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def missing_data(directory):
    """Return the Fashion-MNIST files missing from `directory`."""
    return [name for name in DATA_FILES if not os.path.isfile(os.path.join(directory, name))]


def collect(args, have_torch):
    """Run every round and return all result lines."""
    threads_list = args.threads_list
    tapegrad = os.path.abspath(args.tapegrad_bench)
    torch_script = os.path.join(HERE, "torch_bench.py")
    results = []

    def rounds(count, tapegrad_workloads, torch_workloads):
        for r in range(count):
            for threads in threads_list:
                common = ["--threads", str(threads), "--reps", str(args.reps)]
                sides = [("tapegrad", [tapegrad] + common + ["--data", args.data]
                          + tapegrad_workloads)]
                if have_torch:
                    sides.append(("pytorch", [PYTHON, torch_script] + common
                                  + ["--data", args.data] + torch_workloads))
                if r % 2 == 1:
                    sides.reverse()
                for name, command in sides:
                    print(f"round {r + 1}/{count}, {threads} thread(s): {name} "
                          f"{' '.join(tapegrad_workloads if name == 'tapegrad' else torch_workloads)}",
                          file=sys.stderr, flush=True)
                    results.extend(run_side(command, side_env(threads, name == "pytorch")))

    rounds(args.rounds, STEP_WORKLOADS + TAPEGRAD_ONLY, STEP_WORKLOADS)
    rounds(args.epoch_rounds, ["epoch"], ["epoch"])
    return results


def group(results):
    """Return {(side, workload, threads): [result lines]}."""
    groups = {}
    for line in results:
        groups.setdefault((line["side"], line["workload"], line["threads"]), []).append(line)
    return groups


def verdict(met):
    """Return "yes" or "no" for a target check, or "-" when it could not run."""
    if met is None:
        return "-"
    return "yes" if met else "no"


def median_of(lines):
    return statistics.median(s for line in lines for s in line["samples"])


def format_value(value, unit):
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.2f} s"
    if value >= 100:
        return f"{value:.0f} {unit}"
    return f"{value:.3g} {unit}"


def print_table(results, threads_list, torch_note):
    groups = group(results)
    rows = [("regression", "1-20-20-1 MSE, batch 64"),
            ("classifier", "30-16-1 BCE, batch 32"),
            ("mlp", "784-256-128-10 CE, batch 128"),
            ("chain", "10k f64 scalar ops, fwd+bwd"),
            ("epoch", "Fashion-MNIST epoch, Adam")]

    print("| workload | threads | tapegrad | PyTorch | speed ratio | target | met |")
    print("|---|---|---|---|---|---|---|")
    for workload, label in rows:
        for threads in threads_list:
            mine = groups.get(("tapegrad", workload, threads))
            theirs = groups.get(("pytorch", workload, threads))
            if mine is None:
                continue
            unit = mine[0]["unit"]
            mine_median = median_of(mine)
            theirs_median = median_of(theirs) if theirs else None
            ratio = theirs_median / mine_median if theirs_median else None
            if workload == "chain":
                target = f"fwd+bwd <= {CHAIN_TARGET:g}x plain C"
                plain = groups.get(("tapegrad", "chain_plain", threads))
                cost = mine_median / median_of(plain) if plain else None
                met = verdict(None if cost is None else cost <= CHAIN_TARGET)
            else:
                goal = TARGETS.get((workload, threads))
                target = f">= {goal:g}x" if goal else "-"
                met = verdict(None if ratio is None or goal is None else ratio >= goal)
            print(f"| {label} | {threads} | {format_value(mine_median, unit)} | "
                  f"{format_value(theirs_median, unit)} | "
                  f"{'-' if ratio is None else f'{ratio:.2f}x'} | {target} | {met} |")
    if torch_note:
        print(f"\n{torch_note}: the PyTorch column is empty.")
    print_details(groups, threads_list)


def print_details(groups, threads_list):
    print()
    for threads in threads_list:
        mlp = groups.get(("tapegrad", "mlp", threads))
        sgemm = groups.get(("tapegrad", "sgemm", threads))
        torch_mlp = groups.get(("pytorch", "mlp", threads))
        if mlp:
            flops = mlp[0]["flops_per_step"]
            step = median_of(mlp) * 1e-6
            line = (f"mlp, {threads} thread(s): tapegrad {128 / step:,.0f} samples/s, "
                    f"{flops / step / 1e9:.1f} GFLOP/s")
            if torch_mlp:
                torch_step = median_of(torch_mlp) * 1e-6
                line += (f"; PyTorch {128 / torch_step:,.0f} samples/s, "
                         f"{flops / torch_step / 1e9:.1f} GFLOP/s")
            if sgemm:
                sgemm_step = median_of(sgemm) * 1e-6
                line += (f"; cblas_sgemm alone {flops / sgemm_step / 1e9:.1f} GFLOP/s "
                         f"({sgemm_step * 1e6:.0f} us of products per step, "
                         f"{100 * sgemm_step / step:.0f}% of tapegrad's step)")
            print(line)
    for threads in threads_list:
        chain = groups.get(("tapegrad", "chain", threads))
        plain = groups.get(("tapegrad", "chain_plain", threads))
        torch_chain = groups.get(("pytorch", "chain", threads))
        if chain and plain:
            print(f"chain, {threads} thread(s): plain C {median_of(plain):.2f} ns/op; "
                  f"tapegrad fwd+bwd {median_of(chain):.1f} ns/op = "
                  f"{median_of(chain) / median_of(plain):.2f}x the function")
        if chain and torch_chain:
            names = ("value", "grad_x", "grad_a", "grad_b")
            worst = max(abs(chain[0][k] - torch_chain[0][k]) / max(abs(torch_chain[0][k]), 1e-300)
                        for k in names if torch_chain[0][k] != 0 or chain[0][k] != 0)
            print(f"chain, {threads} thread(s): value and gradients agree with PyTorch to "
                  f"{worst:.1e} relative")
    for threads in threads_list:
        for side in ("tapegrad", "pytorch"):
            epoch = groups.get((side, "epoch", threads))
            if epoch:
                accuracy = ", ".join(f"{line['test_accuracy']:.4f}" for line in epoch)
                rss = max(line["max_rss_kib"] for line in epoch) / 1024
                print(f"epoch, {threads} thread(s), {side}: test accuracy {accuracy}; "
                      f"peak RSS {rss:.0f} MiB")
    allocations = {}
    for (side, workload, threads), lines in groups.items():
        if side == "tapegrad" and "allocations" in lines[0]:
            allocations[workload] = allocations.get(workload, 0) + sum(
                line["allocations"] for line in lines)
    print("heap allocations in tapegrad's timed steps (all rounds): " +
          ", ".join(f"{w} {n}" for w, n in sorted(allocations.items())))


def main():
    args = parse_args()
    # The results go to a temporary file beside --json, renamed over it at
    # the end: an unwritable path fails before the run, and a failed run
    # leaves an existing file as it was.
    json_file = None
    if args.json:
        json_tmp = args.json + ".tmp"
        try:
            json_file = open(json_tmp, "w", encoding="utf-8")
        except OSError as error:
            sys.exit(f"run.py: cannot write --json {args.json}: {error.strerror}")
        atexit.register(remove_if_present, json_tmp)

    build = build_info(args.tapegrad_bench)
    warnings = build_warnings(build)
    for warning in warnings:
        print(f"run.py: warning: {warning}", file=sys.stderr)

    if args.epoch_rounds > 0 and missing_data(args.data):
        print(f"run.py: skipping the epoch: {args.data} lacks "
              f"{', '.join(missing_data(args.data))}. Install Debian's "
              "dataset-fashion-mnist or pass --data DIR.", file=sys.stderr)
        args.epoch_rounds = 0

    version = None if args.no_torch else torch_version()
    have_torch = version is not None
    if args.no_torch:
        torch_note = "PyTorch skipped (--no-torch)"
    elif not have_torch:
        torch_note = "PyTorch is not installed"
        print(f"run.py: PyTorch is not installed ({PYTHON} cannot import torch); "
              "reporting tapegrad's figures only. Install Debian's python3-torch to "
              "compare.", file=sys.stderr)
    else:
        torch_note = None

    results = collect(args, have_torch)
    if json_file is not None:
        with json_file:
            for line in results:
                json_file.write(json.dumps(line) + "\n")
        os.replace(json_tmp, args.json)

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; BLAS: {build['blas']}; "
          f"PyTorch {version if have_torch else ('skipped' if args.no_torch else 'not installed')}")
    for warning in warnings:
        print(f"warning: {warning}")
    print(f"medians of {args.reps} repetitions x {args.rounds} rounds "
          f"({args.epoch_rounds} rounds for the epoch)\n")
    print_table(results, args.threads_list, torch_note)


if __name__ == "__main__":
    main()
