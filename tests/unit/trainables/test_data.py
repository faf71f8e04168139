"""MNIST loading: parsing, verification, splits, sources in order, and every kind of bad file."""

from __future__ import annotations

import functools
import gzip
import http.server
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.errors import UserError
from tests.conftest import REPO, free_port, require
from trainables.data import DATASETS, TEST_FILES, TRAIN_FILES, load_data, parse_idx, read_idx

ALL_FILES = TRAIN_FILES + TEST_FILES


def copy_dataset(src: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ALL_FILES:
        shutil.copy(Path(src) / f"{name}.gz", dst / f"{name}.gz")
    return dst


def raw_bytes(directory: Path, name: str) -> bytes:
    return gzip.decompress((directory / f"{name}.gz").read_bytes())


def replace_with_raw(directory: Path, name: str, content: bytes) -> Path:
    """Swap one .gz file for an uncompressed file holding `content`."""
    (directory / f"{name}.gz").unlink()
    path = directory / name
    path.write_bytes(content)
    return path


def test_official_files_parse_with_their_checksums(mnist_dir):
    labels = read_idx(Path(mnist_dir) / "t10k-labels-idx1-ubyte.gz",
                      DATASETS["mnist"].sha256["t10k-labels-idx1-ubyte"])
    images = read_idx(Path(mnist_dir) / "t10k-images-idx3-ubyte.gz")
    assert labels.shape == (10000,) and labels.max() == 9
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8


def test_raw_and_gzipped_files_give_the_same_data(mnist_dir, tmp_path):
    data_dir = copy_dataset(mnist_dir, tmp_path / "d")
    replace_with_raw(data_dir, "t10k-images-idx3-ubyte", raw_bytes(Path(mnist_dir), "t10k-images-idx3-ubyte"))
    a = load_data("mnist", data_dir, subset=500)
    b = load_data("mnist", mnist_dir, subset=500)
    assert np.array_equal(a.test.images, b.test.images)


def test_full_split_is_two_thirds_train_one_third_val_test_held_out(mnist_dir):
    data = load_data("mnist", mnist_dir)
    assert (len(data.train), len(data.val), len(data.test)) == (40000, 20000, 10000)
    assert data.train.images.shape == (40000, 1, 28, 28)
    assert data.train.images.dtype == np.float32 and data.train.labels.dtype == np.int64
    assert abs(float(data.train.images.mean())) < 0.01
    assert abs(float(data.train.images.std()) - 1.0) < 0.01


def test_split_is_stratified(mnist_dir):
    data = load_data("mnist", mnist_dir, subset=3000)
    train_share = np.bincount(data.train.labels, minlength=10) / len(data.train)
    val_share = np.bincount(data.val.labels, minlength=10) / len(data.val)
    assert np.abs(train_share - val_share).max() < 0.005
    assert (len(data.train), len(data.val), len(data.test)) == (2000, 1000, 3000)


def test_split_depends_only_on_its_seed(mnist_dir):
    a = load_data("mnist", mnist_dir, subset=1000, split_seed=1)
    b = load_data("mnist", mnist_dir, subset=1000, split_seed=1)
    c = load_data("mnist", mnist_dir, subset=1000, split_seed=2)
    assert np.array_equal(a.val.images, b.val.images)
    assert not np.array_equal(a.val.images, c.val.images)


def test_train_and_val_do_not_overlap(mnist_dir):
    data = load_data("mnist", mnist_dir, subset=2000)
    train_rows = {row.tobytes() for row in data.train.images}
    assert not any(row.tobytes() in train_rows for row in data.val.images)


def test_subset_below_minimum_is_a_user_error(mnist_dir):
    with pytest.raises(UserError, match=r"data\.subset is 10"):
        load_data("mnist", mnist_dir, subset=10)


# --- bad data: one error naming the file, never a partial load ---------------------


def corrupt_truncated_gzip(d: Path) -> str:
    path = d / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    return path.name


def corrupt_magic(d: Path) -> str:
    raw = bytearray(raw_bytes(d, "t10k-labels-idx1-ubyte"))
    raw[:4] = struct.pack(">I", 0x00000802)
    return replace_with_raw(d, "t10k-labels-idx1-ubyte", bytes(raw)).name


def corrupt_count(d: Path) -> str:
    raw = raw_bytes(d, "t10k-labels-idx1-ubyte")
    fewer = struct.pack(">II", 0x00000801, 9999) + raw[8:-1]
    replace_with_raw(d, "t10k-labels-idx1-ubyte", fewer)
    return "t10k-images-idx3-ubyte"


def corrupt_label(d: Path) -> str:
    raw = bytearray(raw_bytes(d, "t10k-labels-idx1-ubyte"))
    raw[100] = 11
    return replace_with_raw(d, "t10k-labels-idx1-ubyte", bytes(raw)).name


def corrupt_pixel(d: Path) -> str:
    raw = bytearray(raw_bytes(d, "t10k-images-idx3-ubyte"))
    raw[5000] ^= 0xFF
    return replace_with_raw(d, "t10k-images-idx3-ubyte", bytes(raw)).name


def corrupt_truncated_raw(d: Path) -> str:
    raw = raw_bytes(d, "t10k-images-idx3-ubyte")
    return replace_with_raw(d, "t10k-images-idx3-ubyte", raw[:-784]).name


@pytest.mark.parametrize("corrupt, expected", [
    (corrupt_truncated_gzip, "truncated gzip"),
    (corrupt_magic, "magic number is 0x00000802"),
    (corrupt_count, "holds 10000 images, but t10k-labels-idx1-ubyte holds 9999 labels"),
    (corrupt_label, "label 11 found"),
    (corrupt_pixel, "SHA-256"),
    (corrupt_truncated_raw, "truncated"),
])
def test_bad_file_is_one_error_naming_it(mnist_dir, tmp_path, corrupt, expected):
    data_dir = copy_dataset(mnist_dir, tmp_path / "bad")
    name = corrupt(data_dir)
    with pytest.raises(UserError) as err:
        load_data("mnist", data_dir)
    message = str(err.value)
    assert expected in message and name in message and "\n" not in message


def test_parse_rejects_short_header():
    with pytest.raises(UserError, match="too short"):
        parse_idx(b"\x00\x00", "x")


def test_unreadable_directory_is_reported(mnist_dir, tmp_path):
    data_dir = copy_dataset(mnist_dir, tmp_path / "locked")
    data_dir.chmod(0)
    code = f"from trainables.data import load_data; load_data('mnist', r'{data_dir}')"
    # Root reads anything; in a user namespace it does not, like any other user.
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        require(shutil.which("unshare") is not None, "unshare (util-linux)")
        command = ["unshare", "--user", *command]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    data_dir.chmod(0o755)
    assert proc.returncode != 0
    assert f"{data_dir}: cannot read the directory (Permission denied)" in proc.stderr


# --- sources in order ---------------------------------------------------------------


@pytest.fixture
def mirror(mnist_dir):
    """The official files served over HTTP on 127.0.0.1, like a public mirror."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=mnist_dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_downloads_from_the_first_working_mirror_into_the_cache(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_DIR", raising=False)
    dead = f"http://127.0.0.1:{free_port()}/"
    cache = tmp_path / "cache"
    data = load_data("mnist", subset=500, cache_dir=cache, mirrors=[dead, mirror])
    assert data.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in ALL_FILES)
    again = load_data("mnist", subset=500, cache_dir=cache, mirrors=[dead])  # no server needed now
    assert np.array_equal(again.val.images, data.val.images)


def test_damaged_cache_is_downloaded_again(mirror, tmp_path, monkeypatch, mnist_dir):
    monkeypatch.delenv("MNIST_DIR", raising=False)
    cache = copy_dataset(mnist_dir, tmp_path / "cache")
    corrupt_truncated_gzip(cache)
    data = load_data("mnist", subset=500, cache_dir=cache, mirrors=[mirror])
    assert len(data.train) == 333


def test_explicit_directory_comes_before_the_environment(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "nowhere"))
    assert load_data("mnist", mnist_dir, subset=500).source == mnist_dir


def test_nothing_found_lists_what_was_tried_and_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as err:
        load_data("mnist", cache_dir=tmp_path / "cache", mirrors=[f"http://127.0.0.1:{free_port()}/"])
    message = str(err.value)
    assert "MNIST_DIR" in message and str(tmp_path / "empty") in message
    assert "127.0.0.1" in message and "--data-dir" in message


def test_fashion_mnist_through_the_same_code():
    system_dir = Path(DATASETS["fashion-mnist"].system_dirs[0])
    require(system_dir.is_dir(), "Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    data = load_data("fashion-mnist", subset=1000)
    assert data.source == str(system_dir)
    assert (len(data.train), len(data.val)) == (666, 334)
    assert set(np.unique(data.train.labels)) == set(range(10))


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match=r"data\.dataset is 'cifar'"):
        load_data("cifar")


# --- bounds on what is read, inflated and downloaded ---------------------------------


def test_a_gzip_bomb_is_refused_before_it_is_inflated(tmp_path):
    import zlib

    from trainables.data import read_idx

    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb.write_bytes(packer.compress(bytes(70 << 20)) + packer.flush())  # 70 MiB of zeros, ~70 KB packed
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(UserError, match="inflates to more than 64 MiB, so not an MNIST-format file"):
        read_idx(bomb)


def test_mirrors_must_be_https_except_on_this_machine(tmp_path):
    from trainables.data import _fetch

    with pytest.raises(UserError, match=r"mirrors must be https URLs \(plain http only on this machine\)"):
        _fetch("http://mirror.example.com/mnist/train-images-idx3-ubyte.gz", tmp_path / "x.gz", "0" * 64)
    assert not (tmp_path / "x.gz.part").exists()


def test_a_mirror_that_sends_too_much_is_cut_off(tmp_path):
    from trainables.data import _fetch

    served = tmp_path / "served"
    served.mkdir()
    with (served / "huge.gz").open("wb") as f:
        f.truncate(65 << 20)  # sparse: 65 MiB of zeros
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/huge.gz"
        with pytest.raises(UserError, match="more than 64 MiB, so not an MNIST-format file"):
            _fetch(url, tmp_path / "huge.gz", "0" * 64)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "huge.gz").exists() and not (tmp_path / "huge.gz.part").exists()


def test_a_data_folder_named_on_purpose_is_never_replaced_by_another_source(tmp_path, monkeypatch):
    """A --data-dir (or data.dir) without the files is one line naming it, even with MNIST_DIR set."""
    from core.errors import UserError
    from trainables.data import load_data

    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(UserError, match=r"data directory .*/empty: missing train-images-idx3-ubyte"):
        load_data("mnist", tmp_path / "empty")
