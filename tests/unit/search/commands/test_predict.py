"""`tune predict` reads the images people have: canvas exports, phone photos, 16-bit scans; and says so
when an image holds no digit instead of answering with confidence (no model needed: the input side)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from core.errors import UserError
from search.commands.predict import read_image

SHAPE = (1, 28, 28)


def digit() -> np.ndarray:
    """A dark '1'-like stroke on white paper, 8-bit."""
    pixels = np.full((28, 28), 255, dtype=np.uint8)
    pixels[4:24, 12:16] = 10
    pixels[4:8, 9:13] = 10
    return pixels


def read(path):
    return read_image(path, SHAPE, 0.0, 1.0)


def test_a_canvas_export_is_read_like_the_same_strokes_on_paper(tmp_path):
    paper = tmp_path / "paper.png"
    Image.fromarray(digit()).save(paper)
    canvas = np.zeros((28, 28, 4), dtype=np.uint8)  # dark strokes, transparent elsewhere
    canvas[..., 3] = np.where(digit() < 128, 255, 0)
    Image.fromarray(canvas, "RGBA").save(tmp_path / "canvas.png")
    assert np.allclose(read(tmp_path / "canvas.png"), read(paper), atol=0.05)
    assert read(paper).max() > 0.9  # the stroke is bright, as in MNIST


def test_a_photo_is_turned_as_its_exif_orientation_says(tmp_path):
    upright = Image.fromarray(digit()).transpose(Image.Transpose.ROTATE_90)
    upright.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": stored turned the other way
    stored = Image.fromarray(digit()).transpose(Image.Transpose.ROTATE_180)  # shown turned 90° clockwise
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    assert np.abs(read(tmp_path / "phone.jpg") - read(tmp_path / "upright.png")).mean() < 0.05


def test_a_16_bit_scan_is_scaled_not_clipped(tmp_path):
    Image.fromarray(digit()).save(tmp_path / "eight.png")
    Image.fromarray(digit().astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    assert np.allclose(read(tmp_path / "sixteen.png"), read(tmp_path / "eight.png"), atol=1e-3)


@pytest.mark.parametrize("pixels, expected", [
    (np.full((28, 28), 255, dtype=np.uint8), "a blank or constant image"),
    (np.full((28, 28), 0, dtype=np.uint8), "a blank or constant image"),
    (np.zeros((1, 1), dtype=np.uint8), "1×1 pixels, too small to hold a digit"),
])
def test_an_image_without_a_digit_is_refused(tmp_path, pixels, expected):
    Image.fromarray(pixels).save(tmp_path / "x.png")
    with pytest.raises(UserError, match=expected):
        read(tmp_path / "x.png")


def test_a_nan_image_is_refused(tmp_path):
    Image.fromarray(np.full((28, 28), np.nan, dtype=np.float32), "F").save(tmp_path / "nan.tiff")
    with pytest.raises(UserError, match="a blank or constant image"):
        read(tmp_path / "nan.tiff")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(UserError, match="is a FIFO, but an image must be a regular file"):
        read(tmp_path / "pipe.png")
