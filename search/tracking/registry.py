"""The best model of a sweep: logged with a signature, registered, and given an alias."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

BEST_ALIAS = "best"
MODEL_NAME = "model"
CODE_DIR = Path(__file__).resolve().parent.parent / "trainables"


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    model_uri: str


def model_requirements() -> list[str]:
    """Pinned pip requirements of a logged model (inferring them would reload the model)."""
    import cloudpickle

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}",
            f"cloudpickle=={cloudpickle.__version__}"]


@contextmanager
def _global_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's model logging reads the global tracking URI; set it for the call only.

    Left set, it would leak into MLFLOW_TRACKING_URI and so into the next sweep of this process.
    """
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def log_and_register(
    tracking_uri: str,
    run_id: str,
    model: torch.nn.Module,
    registered_name: str,
    tags: Mapping[str, str],
    example: np.ndarray | None = None,
    alias: str = BEST_ALIAS,
) -> RegisteredModel:
    """Log `model` in run `run_id`, register a new version of `registered_name`, point `alias` at it."""
    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    example = example if example is not None else np.zeros((1, 1, 28, 28), dtype=np.float32)
    model = model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(example)).numpy()
    with _global_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name=MODEL_NAME,
            signature=infer_signature(example, logits),
            input_example=example,
            registered_model_name=registered_name,
            pip_requirements=model_requirements(),
            code_paths=[str(CODE_DIR)],
            # A plain nn.Module on load (eval(), train(), fine-tuning); the pt2 export is a frozen graph.
            serialization_format="pickle",
        )
    client = mlflow.tracking.MlflowClient(tracking_uri)
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, str(value))
    client.set_registered_model_alias(registered_name, alias, version)
    return RegisteredModel(registered_name, version, f"models:/{registered_name}@{alias}")
