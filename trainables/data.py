"""MNIST-format datasets: find the IDX files, verify them, parse, normalise and split.

Sources are tried in order: an explicit directory, the dataset's environment
variable (`MNIST_DIR`, `FASHION_MNIST_DIR`), the system directory where a
distribution package puts the files, the cache directory, then a download from
the public mirrors into the cache. Every file's decompressed content must match
the official SHA-256, so any gzip wrapper (or none) is accepted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.errors import UserError
from core.files import regular_file

log = logging.getLogger(__name__)

IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IMAGE_SIDE_PX = 28
NUM_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 30.0
# The largest official file (60,000 images) is 47 MB raw, 10 MB gzipped: anything much larger is not
# an MNIST-format file, and is never read, downloaded or decompressed past this bound.
MAX_IDX_BYTES = 64 << 20
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # a mirror on this machine may be plain http
MIN_SUBSET = 100
VAL_FRACTION = 1 / 3
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetSpec:
    """What identifies one MNIST-format dataset: checksums, mirrors, statistics."""

    name: str
    sha256: Mapping[str, str]
    mirrors: tuple[str, ...]
    mean: float
    std: float
    env_var: str
    system_dirs: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        mean=0.1307,
        std=0.3081,
        env_var="MNIST_DIR",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=(
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        mean=0.2860,
        std=0.3530,
        env_var="FASHION_MNIST_DIR",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


@dataclass(frozen=True)
class Split:
    """Inputs (float32, N×…; for the built-in datasets normalised N×1×28×28 images) and their
    labels (int64, N)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Data:
    """A dataset ready for training: train and validation for the search, test held out.

    Trials get it `without_test()`: only the driver evaluates the chosen model on the test split.
    """

    name: str
    train: Split
    val: Split
    test: Split | None
    source: str
    sha256: Mapping[str, str] = field(default_factory=dict)
    num_classes: int = NUM_CLASSES

    def without_test(self) -> Data:
        """The same data with the test split left out (what trials receive)."""
        return replace(self, test=None)


def default_cache_dir(dataset: str) -> Path:
    """Where downloaded files are kept: `$XDG_CACHE_HOME/mnist-sweeps/<dataset>`."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "mnist-sweeps" / dataset


def load_data(
    dataset: str = "mnist",
    directory: str | os.PathLike | None = None,
    *,
    subset: int | None = None,
    split_seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
) -> Data:
    """Find, verify and parse a built-in dataset, then split it 2/3 train, 1/3 validation; a
    `package.module:callable` is called instead (`load_custom`).

    `subset` keeps a stratified sample of that many training-file images (and at
    most that many test images), for fast tests and smoke runs.
    """
    if ":" in dataset:  # a user's callable (`package.module:callable`): its own rules
        return load_custom(dataset, {"dir": directory, "subset": subset, "split_seed": split_seed})
    spec = _spec(dataset)
    if subset is not None and subset < MIN_SUBSET:
        raise UserError(f"data.subset is {subset}, but must be >= {MIN_SUBSET}")
    arrays, source = _read_first_source(spec, directory, cache_dir, mirrors)
    train_x, train_y = _stratified_sample(*arrays["train"], subset, split_seed)
    test_x, test_y = _stratified_sample(*arrays["test"], subset, split_seed)
    train_idx, val_idx = _split_indices(train_y, split_seed)
    normalise = _normaliser(spec)
    return Data(
        name=spec.name,
        train=Split(normalise(train_x[train_idx]), train_y[train_idx]),
        val=Split(normalise(train_x[val_idx]), train_y[val_idx]),
        test=Split(normalise(test_x), test_y),
        source=source,
        sha256=dict(spec.sha256),
    )


MAX_CUSTOM_CLASSES = 100_000


def load_custom(ref: str, values: Mapping[str, object]) -> Data:
    """The splits a user's data callable returns, checked and converted to arrays.

    The callable (`data.dataset: package.module:callable`) gets the values of `values` its
    signature names (`dir`, `subset`, `split_seed` from the sweep's `data:`), and returns a mapping
    with `train`, `val` and `test` — each an `(inputs, labels)` pair of arrays or tensors, or a
    torch `Dataset` of such pairs — and optionally `num_classes` (default: the largest label + 1).
    Splitting, subsetting, checksums and normalisation are the callable's own business.
    """
    from core.entrypoints import call_with, resolve

    fn = resolve(ref, "data.dataset")
    try:
        returned = call_with(fn, {k: v for k, v in values.items() if v is not None})
    except Exception as err:
        raise UserError(f"data.dataset: {ref} raised {type(err).__name__}: {' '.join(str(err).split())[:300]}"
                        ) from None
    if not isinstance(returned, Mapping) or not {"train", "val", "test"} <= set(returned):
        raise UserError(f"data.dataset: {ref} returned a {type(returned).__name__}, but must return a mapping "
                        "with train, val and test (each (inputs, labels) or a torch Dataset), and num_classes")
    splits = {name: _as_split(returned[name], f"data.dataset: {ref}: {name}") for name in ("train", "val", "test")}
    top = max(int(split.labels.max()) for split in splits.values()) + 1
    num_classes = returned.get("num_classes", top)
    if not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_CUSTOM_CLASSES or top > num_classes:
        raise UserError(f"data.dataset: {ref}: num_classes is {num_classes!r}, but labels go up to {top - 1}: "
                        f"it must be an int in [2, {MAX_CUSTOM_CLASSES}] above every label")
    shapes = {split.images.shape[1:] for split in splits.values()}
    if len(shapes) > 1:
        raise UserError(f"data.dataset: {ref}: the splits' inputs have different shapes: "
                        f"{', '.join(str(tuple(s)) for s in sorted(shapes))}")
    return Data(name=ref, train=splits["train"], val=splits["val"], test=splits["test"],
                source=f"{ref} (a callable)", num_classes=num_classes)


def _as_split(value: object, where: str) -> Split:
    """One split from (inputs, labels) or a Dataset of pairs: float32 inputs, int64 labels in [0, …)."""
    if isinstance(value, torch.utils.data.Dataset) and not isinstance(value, (tuple, list)):
        try:
            pairs = [value[i] for i in range(len(value))]  # type: ignore[arg-type]
            inputs = np.stack([np.asarray(x, dtype=np.float32) for x, _ in pairs]) if pairs else np.empty(0)
            labels = np.asarray([int(y) for _, y in pairs])
        except Exception as err:
            raise UserError(f"{where}: reading the Dataset failed: {type(err).__name__}: {err}") from None
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        try:
            inputs = np.asarray(value[0], dtype=np.float32)
            labels = np.asarray(value[1])
        except (TypeError, ValueError) as err:
            raise UserError(f"{where}: not numeric arrays ({err})") from None
    else:
        raise UserError(f"{where}: is a {type(value).__name__}, but must be (inputs, labels) or a torch Dataset")
    if len(inputs) != len(labels):
        raise UserError(f"{where}: {len(inputs)} inputs but {len(labels)} labels; they must match one to one")
    if len(labels) < 1 or labels.ndim != 1:
        raise UserError(f"{where}: needs at least one example and one label per input (labels of shape "
                        f"{labels.shape})")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise UserError(f"{where}: labels must be class numbers 0, 1, 2, … (found dtype {labels.dtype}, "
                        f"smallest {labels.min()})")
    if not np.isfinite(inputs).all():
        raise UserError(f"{where}: inputs hold NaN or infinite values")
    return Split(np.ascontiguousarray(inputs), labels.astype(np.int64))


def _spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        known = ", ".join(DATASETS)
        raise UserError(f"data.dataset is '{dataset}', but must be one of: {known}") from None


def _normaliser(spec: DatasetSpec):
    def normalise(images: np.ndarray) -> np.ndarray:
        # torch converts on every core; numpy would take several times longer.
        pixels = torch.from_numpy(np.require(images, requirements=("C", "W"))).to(torch.float32)
        pixels.mul_(1.0 / (255.0 * spec.std)).sub_(spec.mean / spec.std)
        return pixels.reshape(-1, 1, IMAGE_SIDE_PX, IMAGE_SIDE_PX).numpy()

    return normalise


def _split_indices(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train, val = train_test_split(
        indices, test_size=VAL_FRACTION, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(val)


def _stratified_sample(
    images: np.ndarray, labels: np.ndarray, size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if size is None or size >= len(labels):
        return images, labels
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed
    )
    keep = np.sort(keep)
    return images[keep], labels[keep]


# --- finding the files ------------------------------------------------------


def _read_first_source(
    spec: DatasetSpec,
    directory: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    mirrors: Sequence[str] | None,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """Read the dataset from the first source that has all four files."""
    tried: list[str] = []
    candidates = [("--data-dir", directory), (spec.env_var, os.environ.get(spec.env_var))]
    candidates += [("system", d) for d in spec.system_dirs]
    for label, where in candidates:
        if not where:
            continue
        paths, missing = _files_in(Path(where))
        if missing and label == "--data-dir":  # named on purpose: never silently replaced by another source
            raise UserError(f"data directory {where}: missing {', '.join(missing)} (raw or .gz) of {spec.name}")
        if missing:
            tried.append(f"{label} {where}: missing {', '.join(missing)}")
            continue
        return _read_all(spec, paths), str(where)
    cache = Path(cache_dir) if cache_dir else default_cache_dir(spec.name)
    paths, missing = _files_in(cache)
    if not missing:
        try:
            return _read_all(spec, paths), str(cache)
        except UserError as err:
            log.warning("cached %s is damaged (%s); downloading it again", spec.name, err)
            for path in paths.values():
                path.unlink(missing_ok=True)
    else:
        tried.append(f"cache {cache}: missing {', '.join(missing)}")
    paths = _download(spec, cache, tuple(mirrors) if mirrors else spec.mirrors, tried)
    return _read_all(spec, paths), str(cache)


def _files_in(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each IDX name to its file in `directory` (raw or .gz) and list the missing."""
    paths: dict[str, Path] = {}
    missing: list[str] = []
    try:
        present = set(os.listdir(directory))
    except FileNotFoundError:
        return {}, list(TRAIN_FILES + TEST_FILES)
    except OSError as err:
        raise UserError(f"{directory}: cannot read the directory ({err.strerror})") from None
    for name in TRAIN_FILES + TEST_FILES:
        found = [n for n in (name, f"{name}.gz") if n in present]
        if found:
            paths[name] = directory / found[0]
        else:
            missing.append(name)
    return paths, missing


def _read_all(
    spec: DatasetSpec, paths: Mapping[str, Path]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Parse all four files, check that images and labels pair up, then verify checksums."""
    parsed = {name: _parse_file(path) for name, path in paths.items()}
    out = {}
    for part, (images_name, labels_name) in (("train", TRAIN_FILES), ("test", TEST_FILES)):
        (images, _), (labels, _) = parsed[images_name], parsed[labels_name]
        if len(images) != len(labels):
            raise UserError(
                f"{paths[images_name]}: holds {len(images)} images, but "
                f"{paths[labels_name].name} holds {len(labels)} labels"
            )
        out[part] = (images, labels.astype(np.int64))
    for name, (_, digest) in parsed.items():
        _check_digest(paths[name], digest, spec.sha256[name])
    return out


# --- parsing one file ---------------------------------------------------------


def read_idx(path: str | os.PathLike, expected_sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (raw or gzipped), check its structure and, if given, its checksum."""
    array, digest = _parse_file(Path(path))
    if expected_sha256 is not None:
        _check_digest(Path(path), digest, expected_sha256)
    return array


def _parse_file(path: Path) -> tuple[np.ndarray, str]:
    """The array in an IDX file and the SHA-256 of its decompressed content."""
    regular_file(path, "an IDX data file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_IDX_BYTES + 1)
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(raw) > MAX_IDX_BYTES:
        raise UserError(f"{path}: is larger than {MAX_IDX_BYTES >> 20} MiB, so not an MNIST-format file")
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip_bounded(raw, path)
    return parse_idx(raw, str(path)), hashlib.sha256(raw).hexdigest()


def _gunzip_bounded(raw: bytes, path: Path) -> bytes:
    """The content of a gzip file, refusing to inflate past `MAX_IDX_BYTES` (a gzip bomb)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, MAX_IDX_BYTES + 1)
    except zlib.error as err:
        raise UserError(f"{path}: damaged or truncated gzip data ({err})") from None
    if len(out) > MAX_IDX_BYTES or inflater.unconsumed_tail:
        raise UserError(f"{path}: inflates to more than {MAX_IDX_BYTES >> 20} MiB, so not an MNIST-format file")
    if not inflater.eof:
        raise UserError(f"{path}: damaged or truncated gzip data (the stream ends early)")
    return out


def _check_digest(path: Path, digest: str, expected: str) -> None:
    if digest != expected:
        raise UserError(
            f"{path}: SHA-256 of the content is {digest[:16]}…, "
            f"but the official file's is {expected[:16]}…"
        )


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse decompressed IDX bytes holding MNIST-format images or labels."""
    if len(raw) < 8:
        raise UserError(f"{name}: {len(raw)} bytes is too short for an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise UserError(
            f"{name}: magic number is 0x{magic:08x}, but must be "
            f"0x{IMAGES_MAGIC:08x} (images) or 0x{LABELS_MAGIC:08x} (labels)"
        )
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise UserError(f"{name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    if magic == IMAGES_MAGIC and dims[1:] != (IMAGE_SIDE_PX, IMAGE_SIDE_PX):
        raise UserError(f"{name}: images are {dims[1:]}, but must be 28×28")
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - header_len
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise UserError(f"{name}: {what}: header promises {expected} bytes, found {found}")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)
    if magic == LABELS_MAGIC and array.size and array.max() >= NUM_CLASSES:
        raise UserError(f"{name}: label {int(array.max())} found, but labels must be 0..9")
    return array


# --- downloading ---------------------------------------------------------------


def _download(
    spec: DatasetSpec, cache: Path, mirrors: Sequence[str], tried: list[str]
) -> dict[str, Path]:
    """Download every file into `cache`, trying each mirror in turn, checksums verified."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        tried.append(f"cache {cache}: cannot create ({err.strerror})")
        raise _nothing_worked(spec, tried) from None
    paths = {}
    for name in TRAIN_FILES + TEST_FILES:
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            target = cache / f"{name}.gz"
            try:
                _fetch(url, target, spec.sha256[name])
            except (OSError, UserError) as err:
                tried.append(f"{url}: {getattr(err, 'reason', None) or err}")
                continue
            paths[name] = target
            break
        else:
            raise _nothing_worked(spec, tried)
    return paths


def _fetch(url: str, target: Path, sha256: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        raise UserError(f"{url}: mirrors must be https URLs (plain http only on this machine)")
    log.info("downloading %s", url)
    partial = target.with_suffix(target.suffix + ".part")
    request = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)  # noqa: S310 - scheme checked above
    try:
        with request as response, partial.open("wb") as out:
            copied = 0
            while chunk := response.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_IDX_BYTES:
                    raise UserError(f"{url}: more than {MAX_IDX_BYTES >> 20} MiB, so not an MNIST-format file")
                out.write(chunk)
        read_idx(partial, sha256)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)


def _nothing_worked(spec: DatasetSpec, tried: list[str]) -> UserError:
    lines = "; ".join(tried) or "no source configured"
    return UserError(
        f"cannot find {spec.name}: tried {lines}. Put the four IDX files "
        f"({', '.join(TRAIN_FILES + TEST_FILES)}, raw or .gz) in a directory and set {spec.env_var}=DIR, or "
        f"name it: --set data.dir=DIR (tune run, schedule, ablate), --data-dir DIR (tune train)"
    )
