#!/usr/bin/python3
"""PyTorch's side of the tapegrad benchmarks.

Runs the same workloads as build/bench/tapegrad_bench (same models, batch
sizes, dtypes, optimizers and thread count) and prints one JSON line per
result on stdout, in the same format. bench/run.py runs both alternately.

Set OMP_WAIT_POLICY=PASSIVE before running this. PyTorch's OpenMP threads
otherwise spin while waiting for work, which on a 2-core machine takes the
cores the other threads need: the 2-thread mlp step then took 16 to 35 ms
instead of about 2 ms.
OPENBLAS_NUM_THREADS should equal --threads, because torch.set_num_threads
does not reach the OpenBLAS behind Debian's PyTorch.
"""

import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time

try:
    import torch
except ImportError as error:
    print(f"torch_bench: PyTorch is not installed ({error}); install Debian's "
          "python3-torch to compare against it", file=sys.stderr)
    sys.exit(3)

WARMUP_SECONDS = 0.2
REP_SECONDS = 0.05
CHAIN_OPS = 10_000
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"


def report(workload, threads, unit, samples, **extra):
    """Print one result line, in the format of tapegrad_bench."""
    line = {"side": "pytorch", "workload": workload, "threads": threads,
            "unit": unit, "samples": samples, "torch_version": torch.__version__}
    line.update(extra)
    print(json.dumps(line), flush=True)


def time_steps(step, reps):
    """Return seconds per step for each of `reps` repetitions.

    A warm-up of at least WARMUP_SECONDS (and 3 steps) comes first and sizes
    the repetitions so that each lasts about REP_SECONDS, as in tapegrad_bench.
    """
    start = time.perf_counter()
    warm_steps = 0
    while True:
        step()
        warm_steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= WARMUP_SECONDS and warm_steps >= 3:
            break

    steps_per_rep = max(1, int(REP_SECONDS / (elapsed / warm_steps)))
    samples = []
    for _ in range(reps):
        rep_start = time.perf_counter()
        for _ in range(steps_per_rep):
            step()
        samples.append((time.perf_counter() - rep_start) / steps_per_rep)
    return samples


# ---- training steps --------------------------------------------------------


def mlp_model(widths, hidden, output=None):
    """Return Linear layers of the given widths with `hidden` between them."""
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(hidden())
    if output is not None:
        layers.append(output())
    return torch.nn.Sequential(*layers)


def step_flops(widths, batch):
    """Floating-point operations of the matrix products of one step.

    Each layer has a forward product and a weight gradient, and every layer
    but the first an input gradient (the data batch needs none).
    """
    madds = 0
    for i in range(len(widths) - 1):
        product = batch * widths[i] * widths[i + 1]
        madds += (2 if i == 0 else 3) * product
    return 2 * madds


def run_training(name, model, loss_fn, x, y, lr, widths, options):
    """Time SGD steps of `model` on one fixed batch and report us/step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    samples = time_steps(step, options.reps)
    report(name, options.threads, "us/step", [s * 1e6 for s in samples],
           flops_per_step=step_flops(widths, x.shape[0]))


def bench_regression(options):
    widths = [1, 20, 20, 1]
    x = torch.rand(64, 1) * 2 - 1
    y = x * x - 0.5
    run_training("regression", mlp_model(widths, torch.nn.ReLU), torch.nn.MSELoss(),
                 x, y, 0.01, widths, options)


def bench_classifier(options):
    widths = [30, 16, 1]
    x = torch.rand(32, 30) * 2 - 1
    y = (x[:, :1] > 0).float()
    model = mlp_model(widths, torch.nn.ReLU, torch.nn.Sigmoid)
    run_training("classifier", model, torch.nn.BCELoss(), x, y, 0.1, widths, options)


def bench_mlp(options):
    widths = [784, 256, 128, 10]
    x = torch.rand(128, 784) * 2 - 1
    y = torch.randint(0, 10, (128,))
    run_training("mlp", mlp_model(widths, torch.nn.ReLU), torch.nn.CrossEntropyLoss(),
                 x, y, 0.01, widths, options)


# ---- the scalar chain ------------------------------------------------------


def bench_chain(options):
    """Time 10,000 f64 0-d tensor ops (mul, add, tanh in turn) and backward."""
    # The inputs of bench_chain.c, chosen so every adjoint stays a normal double.
    x = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(0.999, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(0.01, dtype=torch.float64, requires_grad=True)
    result = {}

    def step():
        for t in (x, a, b):
            t.grad = None
        v = x
        for _ in range(CHAIN_OPS // 3):
            v = v * a
            v = v + b
            v = torch.tanh(v)
        for _ in range(CHAIN_OPS % 3):
            v = v * a
        v.backward()
        result["value"] = v.item()

    samples = time_steps(step, options.reps)
    report("chain", options.threads, "ns/op", [s * 1e9 / CHAIN_OPS for s in samples],
           ops=CHAIN_OPS, value=result["value"], grad_x=x.grad.item(),
           grad_a=a.grad.item(), grad_b=b.grad.item())


# ---- one Fashion-MNIST epoch -----------------------------------------------


def load_idx(path):
    """Return the shape and the unsigned bytes of a gzip-compressed IDX file."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    values = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    return shape, values


def load_fashion_mnist(directory):
    """Return train and test images (N x 784 in [0, 1]) and labels (int64)."""
    arrays = []
    for part in ("train", "t10k"):
        shape, images = load_idx(os.path.join(directory, f"{part}-images-idx3-ubyte.gz"))
        _, labels = load_idx(os.path.join(directory, f"{part}-labels-idx1-ubyte.gz"))
        arrays.append(images.reshape(shape[0], -1).float().div_(255.0))
        arrays.append(labels.long())
    return arrays


def fashion_model():
    """Return the example's 784-256-128-10 MLP with He-normal weights."""
    model = mlp_model([784, 256, 128, 10], torch.nn.ReLU)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            torch.nn.init.zeros_(layer.bias)
    return model


def train_steps(model, optimizer, scheduler, images, labels, order, batch, max_steps=None):
    """Run Adam steps on the batches of `order`, stepping the schedule after each."""
    loss_fn = torch.nn.CrossEntropyLoss()
    for step, start in enumerate(range(0, len(order), batch)):
        if max_steps is not None and step >= max_steps:
            break
        rows = order[start:start + batch]
        x = images.index_select(0, rows)
        y = labels.index_select(0, rows)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()


def bench_epoch(options):
    """Time one epoch with the settings of examples/fashion_mnist --epochs 1."""
    batch = 128
    train_images, train_labels, test_images, test_labels = load_fashion_mnist(options.data)
    steps = (len(train_labels) + batch - 1) // batch

    # Warm up threads, allocator and caches on a throwaway model.
    torch.manual_seed(2)
    warm = fashion_model()
    warm_optimizer = torch.optim.Adam(warm.parameters(), lr=2e-3)
    warm_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(warm_optimizer, T_max=20)
    train_steps(warm, warm_optimizer, warm_schedule, train_images, train_labels,
                torch.randperm(len(train_labels)), batch, max_steps=20)

    torch.manual_seed(1)
    model = fashion_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.0)
    generator = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    order = torch.randperm(len(train_labels), generator=generator)
    train_steps(model, optimizer, schedule, train_images, train_labels, order, batch)
    seconds = time.perf_counter() - start

    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_labels), 1000):
            predicted = model(test_images[start:start + 1000]).argmax(dim=1)
            correct += (predicted == test_labels[start:start + 1000]).sum().item()
    accuracy = correct / len(test_labels)
    report("epoch", options.threads, "s", [seconds], steps=steps,
           test_accuracy=round(accuracy, 4),
           max_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


WORKLOADS = {
    "regression": bench_regression,
    "classifier": bench_classifier,
    "mlp": bench_mlp,
    "chain": bench_chain,
    "epoch": bench_epoch,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="+", metavar="WORKLOAD",
                        help="one of: " + ", ".join(WORKLOADS) + "; `all` runs all but epoch")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--reps", type=int, default=15,
                        help="timed repetitions after the warm-up (default 15)")
    parser.add_argument("--data", default=DEFAULT_DATA_DIR,
                        help=f"Fashion-MNIST IDX files for epoch (default {DEFAULT_DATA_DIR})")
    options = parser.parse_args()

    names = []
    for name in options.workloads:
        if name == "all":
            names += [w for w in WORKLOADS if w != "epoch"]
        elif name in WORKLOADS:
            names.append(name)
        else:
            parser.error(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")

    torch.set_num_threads(options.threads)
    torch.manual_seed(42)
    for name in names:
        WORKLOADS[name](options)


if __name__ == "__main__":
    main()
