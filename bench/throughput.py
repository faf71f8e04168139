"""Training throughput: samples/s per batch_norm × skip at batch 128, as a share of this machine's
measured single-precision matrix-multiply rate, for the loop as shipped and for the variants tried."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from bench.common import mnist_dir, progress, scale_argument, write_result
from trainables.data import load_data
from trainables.train import TrainParams, as_tensors, build_model, build_optimizer, evaluate, train_epoch

BATCH = 128


def matmul_gflops(threads: int, size: int = 2048, seconds: float = 3.0) -> float:
    """The best sustained fp32 GEMM rate of `threads` threads (large torch.mm)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best


def training_flop_per_sample(model: nn.Module) -> float:
    """Multiply-adds of one forward pass (conv and linear layers) × 2 FLOP × 3 (forward + backward)."""
    macs = 0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            macs += output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return macs * 2 * 3


def relu_before_pool(model: nn.Module) -> None:
    """Put each conv block back in the order conv, norm, ReLU, pool (the shipped one pools first)."""
    for block in model.features[:2]:
        block[2], block[3] = nn.ReLU(), nn.MaxPool2d(2)


def pool_order_ab(data: Any, threads: int, rounds: int, epochs: int) -> dict[str, Any]:
    """Pool-then-ReLU (shipped) against ReLU-then-pool (the seed's order) for bn+skip, alternated
    A-B-A-B in one process so the machine's drift falls on both: samples/s per round and the median
    ratio."""
    params = TrainParams(batch_norm=True, skip=True, batch_size=BATCH)
    shipped, written = [], []
    for _ in range(rounds):
        shipped.append(samples_per_second(data, params, threads, "baseline", epochs)["samples_per_s"])
        written.append(samples_per_second(data, params, threads, "relu_before_pool", epochs)["samples_per_s"])
    ratios = sorted(a / b for a, b in zip(shipped, written, strict=True))
    return {"pool_then_relu": shipped, "relu_then_pool": written, "median_speedup": ratios[len(ratios) // 2],
            "min_speedup": ratios[0], "max_speedup": ratios[-1]}


def fold_ab(data: Any, threads: int, rounds: int) -> dict[str, Any]:
    """Evaluation of bn+skip on the validation split with batch norm folded into the layers before it
    (what `evaluate` does) against the network as trained (`fold=False`), alternated A-B-A-B in one process: seconds
    per round, the median ratio and whether the predictions agree."""
    torch.set_num_threads(threads)
    params = TrainParams(batch_norm=True, skip=True, batch_size=BATCH)
    model, generator = build_model(params), torch.Generator().manual_seed(0)
    images, labels = as_tensors(data.train)
    train_epoch(model, build_optimizer(model, params), (images[: BATCH * 20], labels[: BATCH * 20]), BATCH, generator)
    val = as_tensors(data.val)
    as_trained, with_folding = [], []
    for _ in range(rounds):
        for fold, times in ((False, as_trained), (True, with_folding)):
            started = time.perf_counter()
            evaluate(model, val, fold=fold)  # the fold (a copy of the network) is part of the folded arm's time
            times.append(time.perf_counter() - started)
    ratios = sorted(a / b for a, b in zip(as_trained, with_folding, strict=True))
    return {"eval_s_as_trained": as_trained, "eval_s_folded": with_folding, "median_speedup": ratios[len(ratios) // 2],
            "min_speedup": ratios[0], "max_speedup": ratios[-1], "val_images": len(val[1]),
            "same_accuracy": evaluate(model, val, fold=False)[1] == evaluate(model, val)[1]}


def samples_per_second(data: Any, params: TrainParams, threads: int, variant: str, epochs: int) -> dict[str, float]:
    """Train `epochs` epochs (after a warm-up) and time them; evaluation timed separately."""
    torch.set_num_threads(threads)
    model = build_model(params)
    images, labels = as_tensors(data.train)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        model = torch.compile(model)
    if variant == "relu_before_pool":  # the seed's written order, as shipped until 2026-11-29
        relu_before_pool(model)
    optimizer = build_optimizer(model, params)
    generator = torch.Generator().manual_seed(0)
    warmup = (images[:BATCH * 20], labels[:BATCH * 20])
    augment = "shift" if variant == "augment_shift" else "none"  # its cost: the goal is under 5% of an epoch
    train_epoch(model, optimizer, warmup, BATCH, generator, augment=augment)
    started = time.perf_counter()
    for _ in range(epochs):
        _train_loss, train_acc = train_epoch(model, optimizer, (images, labels), BATCH, generator, augment=augment)
    train_s = (time.perf_counter() - started) / epochs
    started = time.perf_counter()
    _val_loss, val_acc = evaluate(model, as_tensors(data.val))
    eval_s = time.perf_counter() - started
    return {"samples_per_s": len(labels) / train_s, "epoch_train_s": train_s, "eval_s": eval_s,
            "train_acc": train_acc, "val_acc": val_acc}


SETTINGS = {
    "smoke": {"subset": 600, "epochs": 1, "variants": ["baseline"], "threads": [1]},
    "quick": {"subset": 12000, "epochs": 1, "variants": ["baseline", "channels_last", "augment_shift"],
              "threads": [1, 2], "ab_rounds": 3},
    "full": {"subset": None, "epochs": 2, "variants": ["baseline", "channels_last", "compile", "augment_shift"],
             "threads": [1, 2],
             "ab_rounds": 5},
}


def profile_training_step(steps: int = 30) -> list[dict[str, Any]]:
    """Where one thread's training step spends its time: the top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    params = TrainParams(batch_size=BATCH)
    model, generator = build_model(params), torch.Generator().manual_seed(0)
    optimizer = build_optimizer(model, params)
    images, labels = torch.randn(BATCH * steps, 1, 28, 28), torch.randint(0, 10, (BATCH * steps,))
    train_epoch(model, optimizer, (images[: BATCH * 5], labels[: BATCH * 5]), BATCH, generator)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(model, optimizer, (images, labels), BATCH, generator)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_cpu_share": e.self_cpu_time_total / total, "calls": e.count} for e in events[:10]]


def run(settings: dict[str, Any]) -> dict[str, Any]:
    data = load_data("mnist", mnist_dir(), subset=settings["subset"])
    epochs, variants = settings["epochs"], settings["variants"]
    results: dict[str, Any] = {"batch_size": BATCH, "train_samples": len(data.train), "epochs_timed": epochs}
    for threads in settings["threads"]:
        gemm = matmul_gflops(threads, seconds=0.5 if settings["subset"] == 600 else 3.0)
        progress(f"{threads} thread(s): fp32 matmul {gemm:.1f} GFLOP/s")
        results[f"matmul_gflops_{threads}t"] = gemm
        for bn in (True, False):
            for skip in (True, False):
                params = TrainParams(batch_norm=bn, skip=skip, batch_size=BATCH)
                flop = training_flop_per_sample(build_model(params))
                for variant in variants if (bn and skip) else ["baseline"]:
                    key = f"bn={bn},skip={skip},threads={threads},{variant}"
                    measured = samples_per_second(data, params, threads, variant, epochs)
                    measured["mflop_per_sample"] = flop / 1e6
                    measured["fraction_of_matmul"] = measured["samples_per_s"] * flop / 1e9 / gemm
                    results[key] = measured
                    progress(f"{key}: {measured['samples_per_s']:.0f} samples/s, "
                             f"{100 * measured['fraction_of_matmul']:.1f}% of matmul, "
                             f"eval {measured['eval_s']:.2f}s")
    for threads in settings["threads"]:
        if settings.get("ab_rounds"):
            ab = pool_order_ab(data, threads, settings["ab_rounds"], epochs)
            results[f"pool_order_ab_threads={threads}"] = ab
            progress(f"{threads} thread(s): pool then ReLU / ReLU then pool = {ab['median_speedup']:.3f}× "
                     f"(median of {settings['ab_rounds']} A-B rounds, {ab['min_speedup']:.3f}–{ab['max_speedup']:.3f})")
    for threads in settings["threads"]:
        if settings.get("ab_rounds"):
            ab = fold_ab(data, threads, 2 * settings["ab_rounds"])
            results[f"fold_ab_threads={threads}"] = ab
            progress(f"{threads} thread(s): evaluation as trained / batch norm folded = {ab['median_speedup']:.3f}× "
                     f"({ab['min_speedup']:.3f}–{ab['max_speedup']:.3f}; same accuracy: {ab['same_accuracy']})")
    results["profile_1_thread"] = profile_training_step(steps=5 if settings["subset"] == 600 else 30)
    progress("profile: " + ", ".join(f"{p['op']} {p['self_cpu_share']:.0%}" for p in results["profile_1_thread"][:5]))
    return results


def main() -> None:
    scale = scale_argument(__doc__)
    write_result("throughput", scale, run(SETTINGS[scale]))


if __name__ == "__main__":
    main()
