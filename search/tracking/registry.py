"""The best model of a sweep: logged without pickle, registered, and given an alias.

A registered version holds the network twice, neither of which runs pickled code on load:
- MLflow's `pytorch` flavor in the `pt2` format (`torch.export`): `mlflow.pytorch.load_model`
  gives the exported graph, which predicts as the network does in eval mode;
- the weights as safetensors beside the trial's config (`extra_files/`): `load_model` below
  rebuilds the seed network from them, an `nn.Module` in eval mode that can be fine-tuned.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

BEST_ALIAS = "best"
MODEL_NAME = "model"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "trial_config.json"
EXAMPLE_BATCH = 2  # torch.export fixes a batch dimension of 1; 2 keeps it dynamic


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    model_uri: str


def model_requirements() -> list[str]:
    """Pinned pip requirements of a logged model (inferring them would reload the model)."""
    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]


def log_and_register(
    tracking_uri: str,
    run_id: str,
    model: torch.nn.Module,
    config: Mapping[str, Any],
    registered_name: str,
    tags: Mapping[str, Any],
    alias: str = BEST_ALIAS,
    dataset: str | None = None,
) -> RegisteredModel:
    """Log `model` (built from trial `config`, trained on `dataset`) in run `run_id`, register a new
    version, point `alias` at it."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from safetensors.torch import save_file

    shape = tuple(getattr(model, "input_shape", (1, 28, 28)))  # set by load_checkpoint_model
    num_classes = int(getattr(model, "num_classes", 10))
    example = np.zeros((EXAMPLE_BATCH, *shape), dtype=np.float32)
    model = model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).numpy()
    with tempfile.TemporaryDirectory() as staging:
        weights, config_file = Path(staging) / WEIGHTS_FILE, Path(staging) / CONFIG_FILE
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        config_file.write_text(json.dumps({**config, "num_classes": num_classes, "input_shape": list(shape),
                                           **({"dataset": dataset} if dataset else {})}, default=str))
        # MLflow's model logging reads the global tracking URI; it is set for this call only,
        # so it cannot leak into the next sweep of this process.
        with _use_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model,
                name=MODEL_NAME,
                signature=infer_signature(example, logits),
                input_example=example,
                registered_model_name=registered_name,
                pip_requirements=model_requirements(),
                serialization_format="pt2",
                extra_files=[str(weights), str(config_file)],
            )
    client = mlflow.tracking.MlflowClient(tracking_uri)
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    client.set_registered_model_alias(registered_name, alias, version)
    return RegisteredModel(registered_name, version, f"models:/{registered_name}@{alias}")


SAVED_MODEL_DIR = "mlflow_model"  # in a user trainable's checkpoint: a model saved with mlflow.<flavor>.save_model


def register_saved_model(tracking_uri: str, run_id: str, checkpoint_uri: str, registered_name: str,
                         tags: Mapping[str, Any], alias: str = BEST_ALIAS) -> RegisteredModel | None:
    """Register the MLflow model a user trainable saved in its checkpoint (`mlflow_model/`, written
    with any flavor's `save_model`): logged as the run's `model` artifacts, then a new version with
    `alias`. None when the checkpoint holds none (the run keeps the checkpoint's location)."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from ray import tune

    with tune.Checkpoint(checkpoint_uri).as_directory() as directory:
        saved = Path(directory) / SAVED_MODEL_DIR
        if not (saved / "MLmodel").is_file():
            log.info("the best checkpoint %s holds no %s/MLmodel: nothing to register", checkpoint_uri,
                     SAVED_MODEL_DIR)
            return None
        client = mlflow.tracking.MlflowClient(tracking_uri)
        client.log_artifacts(run_id, str(saved), MODEL_NAME)
    with _use_tracking_uri(tracking_uri):
        version = str(mlflow.register_model(f"runs:/{run_id}/{MODEL_NAME}", registered_name).version)
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    client.set_registered_model_alias(registered_name, alias, version)
    return RegisteredModel(registered_name, version, f"models:/{registered_name}@{alias}")


def load_model(model_uri: str, tracking_uri: str | None = None) -> torch.nn.Module:
    """The registered network as an `nn.Module` in eval mode, rebuilt from its safetensors weights.

    `model_uri` is e.g. `models:/quick@best`; nothing pickled is read. A network built by a sweep's
    own `model:` callable is rebuilt by importing that callable: its module must be importable here
    (the registered `pt2` graph, `mlflow.pytorch.load_model`, needs no code of yours).
    """
    return load_model_with_config(model_uri, tracking_uri)[0]


def load_model_with_config(model_uri: str, tracking_uri: str | None = None) -> tuple[torch.nn.Module, dict]:
    """`load_model`, and what was saved beside the weights: the trial's config, `num_classes`,
    `input_shape` and `dataset` (the last absent from versions registered before it was saved)."""
    import contextlib

    import mlflow
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from safetensors.torch import load_file

    from trainables.train import TrainParams, build_model

    with tempfile.TemporaryDirectory() as staging:
        # MLflow resolves a models:/ URI with the process-wide registry (it ignores the URIs passed to
        # download_artifacts), which follows the tracking URI: set it for this call only.
        with _use_tracking_uri(tracking_uri) if tracking_uri else contextlib.nullcontext():
            folder = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=staging)) / "extra_files"
        saved = json.loads((folder / CONFIG_FILE).read_text())
        state = load_file(str(folder / WEIGHTS_FILE))
    extras = {key: saved.pop(key) for key in ("model", "num_classes", "input_shape", "dataset") if key in saved}
    model = build_model(TrainParams.from_config(saved, extras.get("model")), extras.get("num_classes", 10))
    model.load_state_dict(state)
    return model.eval(), {**saved, **extras}
