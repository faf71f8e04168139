"""Every reader of a path refuses what is not a regular file, at once (a FIFO would block it forever)."""

from __future__ import annotations

import os

import pytest

from core.errors import UserError
from core.files import regular_file


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_a_fifo_a_folder_and_a_missing_file_are_one_line(tmp_path, fifo):
    with pytest.raises(UserError, match="is a FIFO, but an image must be a regular file"):
        regular_file(fifo, "an image")
    with pytest.raises(UserError, match="is a folder"):
        regular_file(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        regular_file(tmp_path / "absent")
    (tmp_path / "real").write_bytes(b"x")
    assert regular_file(tmp_path / "real") == tmp_path / "real"


def test_an_idx_data_file_that_is_a_fifo_is_refused(fifo):
    from trainables.data import read_idx

    with pytest.raises(UserError, match="is a FIFO, but an IDX data file must be a regular file"):
        read_idx(fifo)


def test_a_checkpoint_whose_state_is_a_fifo_is_refused(tmp_path):
    from trainables.trainable import STATE_FILE, load_checkpoint_model

    os.mkfifo(tmp_path / STATE_FILE)
    with pytest.raises(UserError, match="is a FIFO, but a checkpoint's state must be a regular file"):
        load_checkpoint_model(tmp_path, {"epochs": 1})
