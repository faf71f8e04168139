"""`tune train`: one configuration trained in this process, no Ray, no MLflow."""

from __future__ import annotations

import sys
from typing import Any

import torch

from core.errors import UserError
from spaces import SweepConfig
from trainables.data import load_data
from trainables.train import TrainingRun, TrainParams, evaluate_on_test


def trial_params(config: SweepConfig) -> tuple[TrainParams, list[str]]:
    """The sweep's fixed values over the defaults, and the searched keys left at default (with a
    `model:` callable, which has no defaults of ours: at their first value or low end)."""
    from spaces import representative

    fixed = config.trial_config()
    if config.model:
        fixed.update({k: representative(v) for k, v in config.searched().items()})
    params = TrainParams.from_config(fixed, config.model)
    return params, sorted(config.searched())


def format_epoch(metrics: dict[str, float], epochs: int) -> str:
    return (
        f"epoch {metrics['epoch']:>3}/{epochs}  "
        f"train_loss {metrics['train_loss']:.4f}  train_acc {metrics['train_acc']:.4f}  "
        f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
        f"{metrics['epoch_seconds']:.1f}s"
    )


def train_locally(config: SweepConfig, threads: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train the sweep's fixed configuration; print progress to stderr; return every metric."""
    from tqdm import tqdm

    if config.trainable:
        raise UserError(f"{config.name} runs its own trainable ({config.trainable}); tune train runs the tool's "
                        "training loop: use tune run, or call your function yourself")
    params, left_at_default = trial_params(config)
    err = sys.stderr
    if threads:
        torch.set_num_threads(threads)
    print(f"config: {params.as_dict()}", file=err)
    for key in left_at_default:
        print(f"note: {key} is searched by {config.name}; training with {params.as_dict().get(key)!r} "
              f"(choose with --set {key}=VALUE)", file=err)
    data = load_data(
        config.data.dataset, config.data.dir, subset=config.data.subset, split_seed=config.data.split_seed
    )
    print(f"data: {data.name} from {data.source}: {len(data.train)} train, {len(data.val)} val, "
          f"{len(data.test)} test; {torch.get_num_threads()} threads", file=err)
    if config.model or config.data.is_custom:
        from search.commands.run import check_model, model_check_text

        print(model_check_text(check_model(config, data)), file=err)
    run = TrainingRun(params, data, keep=(config.metric, config.mode))
    history = []
    while not run.finished:
        with tqdm(total=len(data.train), unit="img", leave=False, file=err, disable=quiet,
                  desc=f"epoch {run.epoch + 1}/{params.epochs}") as bar:
            metrics = run.run_epoch(progress=bar.update)
        history.append(metrics)
        print(format_epoch(metrics, params.epochs), file=err)
    final = {**history[-1], **evaluate_on_test(run.best_model(), data.test)}
    print(f"test_acc {final['test_acc']:.4f}  test_loss {final['test_loss']:.4f} "
          f"(weights of the best {config.metric}, epoch {_best_epoch(history, config.metric, config.mode)})",
          file=err)
    return {"config": params.as_dict(), "dataset": data.name, "metrics": final, "history": history}


def _best_epoch(history: list[dict[str, float]], metric: str, mode: str) -> int:
    """The first epoch with the best `metric` (the one whose weights were kept)."""
    choose = min if mode == "min" else max
    return int(choose(history, key=lambda m: m[metric])["epoch"])
