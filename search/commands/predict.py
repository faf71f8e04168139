"""`tune predict`: the registered best model on image files (PNG, JPEG, …), one line per image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.errors import UserError

TOP = 3


def read_image(path: Path, shape: tuple[int, ...], mean: float, std: float) -> Any:
    """An image as the network's input: grayscale, resized to its height × width, dark digits on a light
    background inverted (MNIST's digits are light on dark), scaled to [0, 1], normalised as in training."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            gray = image.convert("L").resize((shape[-1], shape[-2]), Image.Resampling.LANCZOS)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"{path}: not an image Pillow can read ({err})") from None
    pixels = np.asarray(gray, dtype=np.float32) / 255.0
    if pixels.mean() > 0.5:  # a dark digit on a light background (a scan, a drawing)
        pixels = 1.0 - pixels
    return ((pixels - mean) / std).reshape(shape)


def predict(images: list[str], model_uri: str, tracking_uri: str) -> list[dict[str, Any]]:
    """Each image's predicted class and the top classes with their probabilities."""
    import numpy as np
    import torch

    from search.tracking.registry import load_model_with_config
    from trainables.data import DATASETS

    try:
        model, config = load_model_with_config(model_uri, tracking_uri)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{model_uri} at {tracking_uri}: cannot load it ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:200]})") from None
    dataset = config.get("dataset", "mnist")
    shape = tuple(config.get("input_shape", (1, 28, 28)))
    if dataset not in DATASETS or len(shape) != 3 or shape[0] != 1:
        raise UserError(f"{model_uri} was trained on {dataset} with inputs {shape}: tune predict reads images "
                        "for models of the built-in datasets (one channel); call the model yourself")
    spec = DATASETS[dataset]
    batch = np.stack([read_image(Path(p), shape, spec.mean, spec.std) for p in images])
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
    results = []
    for path, p in zip(images, probabilities, strict=True):
        top = np.argsort(p)[::-1][:TOP]
        results.append({"image": path, "class": int(top[0]), "probability": float(p[top[0]]),
                        "top": [{"class": int(c), "probability": float(p[c])} for c in top]})
    return results


def print_predictions(results: list[dict[str, Any]]) -> None:
    for r in results:
        others = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"][1:])
        print(f"{r['image']}: {r['class']} (p {r['probability']:.3f}; then {others})", file=sys.stdout)
