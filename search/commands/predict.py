"""`tune predict`: the registered best model on image files (PNG, JPEG, …), one line per image."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.files import regular_file

TOP = 3


MIN_SIDE_PX = 8  # smaller is no picture of a digit
MIN_CONTRAST = 0.02  # the spread of a blank, constant or nearly constant image's pixels


def read_image(path: Path, shape: tuple[int, ...], mean: float, std: float) -> Any:
    """An image as the network's input: EXIF orientation applied, transparency composited onto white,
    16-bit scaled, grayscale, resized to its height × width, dark digits on a light background
    inverted (MNIST's digits are light on dark), scaled to [0, 1], normalised as in training.
    An image with nothing digit-like in it (blank, constant, tiny) is a `UserError`."""
    import numpy as np

    pixels = _grayscale(regular_file(path, "an image"))
    if min(pixels.shape) < MIN_SIDE_PX:
        raise UserError(f"{path}: {pixels.shape[1]}×{pixels.shape[0]} pixels, too small to hold a digit")
    if not np.isfinite(pixels).all() or float(pixels.std()) < MIN_CONTRAST:
        raise UserError(f"{path}: a blank or constant image, no digit to classify")
    pixels = _resized(pixels, shape[-2], shape[-1])
    if pixels.mean() > 0.5:  # a dark digit on a light background (a scan, a drawing)
        pixels = 1.0 - pixels
    return ((pixels - mean) / std).reshape(shape).astype(np.float32)


def _grayscale(path: Path) -> Any:
    """The image's luminance in [0, 1], as a float array, whatever its mode."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit (or 32-bit integer) grayscale
                top = 65535.0 if image.mode.startswith("I;16") else max(float(np.asarray(image).max()), 1.0)
                return np.asarray(image, dtype=np.float32) / top
            if image.mode == "F":
                return np.asarray(image, dtype=np.float32)
            if "A" in image.getbands() or "transparency" in image.info:
                rgba = image.convert("RGBA")  # a canvas export: strokes on transparent pixels, composited onto white
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise UserError(f"{path}: not an image Pillow can read ({' '.join(str(err).split())[:200]})") from None


def _resized(pixels: Any, height: int, width: int) -> Any:
    import numpy as np
    from PIL import Image

    image = Image.fromarray(pixels.astype(np.float32), mode="F")
    return np.clip(np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32), 0, 1)


def predict(images: list[str], model_uri: str, tracking_uri: str) -> list[dict[str, Any]]:
    """Each image's predicted class and the top classes with their probabilities."""
    import numpy as np
    import torch

    from search.tracking.registry import load_model_with_config
    from trainables.data import DATASETS

    for path in images:  # a missing file or a FIFO is a mistake in the command, found before the model loads
        regular_file(path, "an image")
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
    inputs: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for path in images:  # one image's problem is its own line, not the end of the others
        try:
            inputs[path] = read_image(Path(path), shape, spec.mean, spec.std)
        except UserError as err:
            problems[path] = str(err)
    probabilities = {}
    if inputs:
        with torch.no_grad():
            out = torch.softmax(model(torch.from_numpy(np.stack(list(inputs.values())))), dim=1).numpy()
        probabilities = dict(zip(inputs, out, strict=True))
    results = []
    for path in images:
        if path in problems:
            results.append({"image": path, "class": None, "error": problems[path]})
            continue
        p = probabilities[path]
        top = np.argsort(p)[::-1][:TOP]
        results.append({"image": path, "class": int(top[0]), "probability": float(p[top[0]]),
                        "top": [{"class": int(c), "probability": float(p[c])} for c in top]})
    return results


def print_predictions(results: list[dict[str, Any]]) -> None:
    for r in results:
        if r["class"] is None:
            print(f"{r['image']}: no prediction: {r['error']}", file=sys.stdout)
            continue
        others = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"][1:])
        print(f"{r['image']}: {r['class']} (p {r['probability']:.3f}; then {others})", file=sys.stdout)
