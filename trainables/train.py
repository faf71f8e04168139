"""The training loop in plain PyTorch: one configuration, epoch by epoch."""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from core.names import AUGMENTS, LR_SCHEDULES, OPTIMIZERS
from trainables.data import Data, Split
from trainables.model import NUM_CLASSES, SeedNet, folded_for_inference

SHIFT = 2  # augment: shift moves each training image by up to this many pixels, each way
SGD_MOMENTUM = 0.9
EVAL_BATCH_SIZE = 256  # activations stay in L2: 1.5x faster than 1000 on a 1-thread CPU (bench/throughput.py)


@dataclass(frozen=True)
class TrainParams:
    """One trial's configuration; the names are the sweep's config keys."""

    batch_norm: bool = True
    skip: bool = True
    lr: float = 1e-3
    l2: float = 0.0
    dropout: float = 0.0
    batch_size: int = 128
    epochs: int = 10
    seed: int = 0
    optimizer: str = "adam"  # adam (L2 coupled, the seed's) | adamw (decoupled weight decay) | sgd (momentum 0.9)
    lr_schedule: str = "constant"  # constant | cosine (to 0) | onecycle (up to lr, then down): stepped per batch
    augment: str = "none"  # none | shift: training images moved by up to SHIFT pixels, validation/test never
    model: str | None = None  # `package.module:callable` building the network; None: the seed network
    model_args: tuple[tuple[str, Any], ...] = ()  # with `model`: the trial's config, by key

    @classmethod
    def from_config(cls, config: Mapping[str, Any], model: str | None = None) -> TrainParams:
        """Build from a Tune config dict, converting each value to its field's type. With a
        `model` callable, every key of the config is also kept for it (`model_args`)."""
        casts = {"bool": bool, "float": float, "int": int, "str": str}
        names = {f.name: f.type for f in fields(cls) if f.type in casts}
        unknown = set(config) - set(names)
        if unknown and model is None:
            raise TypeError(f"unknown config keys: {sorted(unknown)}")
        known = {k: casts[names[k]](v) for k, v in config.items() if k in names}
        args = tuple(sorted((k, v) for k, v in config.items() if k != "epochs")) if model else ()
        return cls(**known, model=model, model_args=args)

    def __post_init__(self) -> None:
        for key, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("augment", AUGMENTS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} is {getattr(self, key)!r}, not one of {', '.join(allowed)}")

    def as_dict(self) -> dict[str, Any]:
        """The configuration by key (a custom model's own keys included)."""
        if self.model is None:
            return {k: v for k, v in asdict(self).items() if k not in ("model", "model_args")}
        return {**dict(self.model_args), "epochs": self.epochs}


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: str = "none",
) -> tuple[float, float]:
    """One pass over a freshly shuffled training set; returns (mean loss, accuracy). A learning-rate
    `schedule` steps after every batch; `augment="shift"` moves each training image (`shift_batch`)."""
    images, labels = split
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    seen = 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) < 2:  # batch norm cannot train on a single sample
            continue
        inputs = images[batch] if augment == "none" else shift_batch(images[batch], generator)
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        # Accumulate on the device; one host sync per epoch, not per batch.
        loss_sum += loss.detach() * len(batch)
        correct += (logits.detach().argmax(1) == labels[batch]).sum()
        seen += len(batch)
        if progress is not None:
            progress(len(batch))
    return loss_sum.item() / seen, correct.item() / seen


def shift_batch(images: torch.Tensor, generator: torch.Generator, shift: int = SHIFT) -> torch.Tensor:
    """Each image moved by its own random offset of up to `shift` pixels in each direction, the border
    repeated (the background of a digit), in a few tensor operations for the whole batch."""
    n, channels, height, width = images.shape
    padded = nn.functional.pad(images, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (2, n), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device)[None, :] + offsets[0][:, None]  # n × H
    cols = torch.arange(width, device=images.device)[None, :] + offsets[1][:, None]  # n × W
    samples = torch.arange(n, device=images.device)[:, None, None, None]
    planes = torch.arange(channels, device=images.device)[None, :, None, None]
    return padded[samples, planes, rows[:, None, :, None], cols[:, None, None, :]]


@torch.inference_mode()
def evaluate(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor], fold: bool = True) -> tuple[float, float]:
    """Mean loss and accuracy of `model` in eval mode (batch norm uses running stats; in the seed
    network, unless `fold` is false, it is folded into the layer before it: faster, the same predictions)."""
    images, labels = split
    model.eval()
    if fold:
        model = folded_for_inference(model)
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, len(labels), EVAL_BATCH_SIZE):
        logits = model(images[start : start + EVAL_BATCH_SIZE])
        target = labels[start : start + EVAL_BATCH_SIZE]
        loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    return loss_sum.item() / len(labels), correct.item() / len(labels)


def evaluate_on_test(model: nn.Module, test: Split) -> dict[str, float]:
    """`test_loss` and `test_acc` of a chosen model: the one evaluation on the test split."""
    test_loss, test_acc = evaluate(model, as_tensors(test))
    return {"test_loss": test_loss, "test_acc": test_acc}


def as_tensors(split: Split, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """View a split's arrays as tensors on `device` (no copy on the CPU)."""
    with warnings.catch_warnings():
        # Arrays from Ray's object store are read-only; training never writes to them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        images = torch.from_numpy(np.asarray(split.images))
        labels = torch.from_numpy(np.asarray(split.labels))
    return images.to(device), labels.to(device)


def build_model(params: TrainParams, num_classes: int = NUM_CLASSES) -> nn.Module:
    """The network of this configuration, seeded for reproducibility: the seed network with its
    switches, or what the `model` callable returns for the config values its signature names."""
    torch.manual_seed(params.seed)
    if params.model is None:
        return SeedNet(batch_norm=params.batch_norm, skip=params.skip, dropout=params.dropout)
    from core.entrypoints import call_with, resolve

    network = call_with(resolve(params.model, "model"), {**dict(params.model_args), "num_classes": num_classes})
    if not isinstance(network, nn.Module):
        raise TypeError(f"model {params.model} returned a {type(network).__name__}, not a torch.nn.Module")
    return network


def build_optimizer(model: nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    """The trial's optimizer, with `l2` as its weight decay.

    `adam` (the seed's): `weight_decay` adds `l2 * w` to each gradient before Adam's moment
    estimates, the gradient of the explicit penalty `l2/2 * ||w||^2` (coupled L2). `adamw`: the
    decay is applied to the weights directly, outside the moment estimates (decoupled; a different
    scale of `l2` works best). `sgd`: momentum 0.9, coupled L2.
    """
    # The fused kernels do the whole update in one pass: about 10% faster per step on the CPU.
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=SGD_MOMENTUM, weight_decay=params.l2)
    kind = torch.optim.AdamW if params.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=params.lr, weight_decay=params.l2, fused=True)


def build_schedule(optimizer: torch.optim.Optimizer, params: TrainParams, steps_per_epoch: int
                   ) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule over the whole run, stepped after every batch; None for constant."""
    total = max(1, params.epochs * steps_per_epoch)
    if params.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if params.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=params.lr, total_steps=total)
    return None


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """The optimizer steps of one epoch (`train_epoch` skips a last batch of one sample)."""
    full, rest = divmod(samples, batch_size)
    return full + (1 if rest >= 2 else 0)


class TrainingRun:
    """One configuration being trained: model, optimizer, RNG state and best weights.

    `state_dict()` holds everything needed to continue at the next epoch with the
    same results as an uninterrupted run.
    """

    def __init__(
        self, params: TrainParams, data: Data, device: torch.device | str = "cpu",
        keep: tuple[str, str] = ("val_loss", "min"),
    ) -> None:
        self.params = params
        # The weights kept (and checkpointed, and registered) are those of the best epoch by the sweep's
        # metric: `keep` is that metric (one this loop reports) and its mode.
        self.keep_metric, self.keep_mode = keep
        self.device = torch.device(device)
        self.num_classes = data.num_classes
        self.input_shape = tuple(int(n) for n in np.shape(data.train.images)[1:])
        self.model = build_model(params, self.num_classes).to(self.device)
        self.optimizer = build_optimizer(self.model, params)
        self.schedule = build_schedule(self.optimizer, params, steps_per_epoch(len(data.train), params.batch_size))
        self.generator = torch.Generator().manual_seed(params.seed)
        self.train_split = as_tensors(data.train, self.device)
        self.val_split = as_tensors(data.val, self.device)
        self.epoch = 0
        self.best_score = math.inf if self.keep_mode == "min" else -math.inf
        self.best_weights = copy.deepcopy(self.model.state_dict())

    @property
    def finished(self) -> bool:
        return self.epoch >= self.params.epochs

    def run_epoch(self, progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """Train one epoch, evaluate on validation, keep the best weights; return metrics."""
        started = time.perf_counter()
        train_loss, train_acc = train_epoch(
            self.model, self.optimizer, self.train_split, self.params.batch_size,
            self.generator, progress, self.schedule, self.params.augment,
        )
        val_loss, val_acc = evaluate(self.model, self.val_split)
        self.epoch += 1
        metrics = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
        }
        score = metrics[self.keep_metric]
        if score < self.best_score if self.keep_mode == "min" else score > self.best_score:
            self.best_score = score
            self.best_weights = copy.deepcopy(self.model.state_dict())
        return {**metrics, "epoch_seconds": time.perf_counter() - started}

    def best_model(self) -> nn.Module:
        """A copy of the network with the weights of its best epoch by the kept metric (`keep`)."""
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.best_weights)
        return model.eval()


    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **({"lr_schedule": self.schedule.state_dict()} if self.schedule is not None else {}),
            "epoch": self.epoch,
            "best_score": self.best_score,
            "keep_metric": self.keep_metric,
            "best_weights": self.best_weights,
            "shuffle_rng": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None:  # the same learning-rate curve, continued where it stopped
            self.schedule.load_state_dict(state["lr_schedule"])
        self.epoch = int(state["epoch"])
        # A checkpoint written before the kept metric followed the sweep's has `best_val_loss`.
        self.best_score = float(state["best_score"] if "best_score" in state else state["best_val_loss"])
        self.best_weights = state["best_weights"]
        self.generator.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
