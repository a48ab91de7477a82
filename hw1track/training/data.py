"""MNIST and Fashion-MNIST as in-memory tensors, loaded by torchvision's own dataset classes from a local root.

Both are 60,000 + 10,000 grey 28x28 images of ten classes in four IDX files of
the same names, so one `ImageSet` describes each: its torchvision class (whose
name is also the folder torchvision reads under the root), the MD5 of each
decompressed file, the pixel statistics that normalise it, and the variable
naming a folder to import it from.

The files are imported once from a folder the user names (gzipped or raw IDX),
each verified by the MD5 of its decompressed bytes, because machines without
internet cannot use torchvision's download and a silently different file would
make every number in a report wrong. Training then indexes tensors directly:
no per-sample transforms, no DataLoader.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch

from hw1track.errors import DataUnavailable

ROOT_ENV = "HW1TRACK_DATA_ROOT"
SOURCES_RECORD = "verified-sources.json"  # source files already checked: path -> [size, mtime_ns]


@dataclass(frozen=True, eq=False)  # hashed by identity: each set is one module-level object
class ImageSet:
    """What tells one IDX image set from another: its files' checksums, its statistics, where it comes from."""

    name: str  # as --dataset takes it and the `dataset` param records it
    title: str  # as figures and the report name it
    torchvision_class: str  # torchvision.datasets.<class>, which reads <root>/<class>/raw
    md5: Mapping[str, str]  # decompressed file name -> MD5 of its bytes
    mean: float  # of the training pixels scaled to [0, 1]
    std: float
    source_env: str  # the variable naming a folder to import the files from
    cli_option: str | None = None  # the command-line option naming that folder, where there is one

    @property
    def how_to_provide(self) -> str:
        option = f" (or pass {self.cli_option})" if self.cli_option else ""
        return (f"set {self.source_env}{option} to a folder holding the four {self.title} IDX files "
                f"({', '.join(self.md5)}, gzipped or not)")

    def checksum(self) -> str:
        """One MD5 naming the whole set: the hash of the four files' MD5s in a fixed order."""
        return hashlib.md5("".join(self.md5[name] for name in sorted(self.md5)).encode()).hexdigest()


# The published MD5s of the original MNIST's decompressed files.
MNIST = ImageSet("mnist", "MNIST", "MNIST", {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}, mean=0.1307, std=0.3081, source_env="HW1TRACK_MNIST_DIR", cli_option="--mnist-dir")
# Zalando's published MD5s of the decompressed files (Xiao, Rasul & Vollgraf 2017); the statistics are
# those of its 60,000 training images (tests/test_data.py computes them again).
FASHION_MNIST = ImageSet("fashion-mnist", "Fashion-MNIST", "FashionMNIST", {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}, mean=0.2860, std=0.3530, source_env="HW1TRACK_FASHION_MNIST_DIR")
IMAGE_SETS = {image_set.name: image_set for image_set in (MNIST, FASHION_MNIST)}


def image_set_of(config: object) -> ImageSet:
    """The image set an experiment's config trains on: its `dataset` field, MNIST for configs without one."""
    return IMAGE_SETS[getattr(config, "dataset", MNIST.name)]

# MNIST's names from before Fashion-MNIST came, which notebooks and tests use.
MNIST_MD5, SOURCE_ENV, HOW_TO_PROVIDE = MNIST.md5, MNIST.source_env, MNIST.how_to_provide
MNIST_MEAN, MNIST_STD = MNIST.mean, MNIST.std


@dataclass(frozen=True)
class Mnist:
    """Normalised images (N, 1, 28, 28) float32 and labels (N,) int64, plus the data's identity.

    Named for MNIST, the first set; `load_images` returns one for any `ImageSet`.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    checksum: str
    dataset: str = "mnist"  # the `ImageSet.name` these images are of

    def to(self, device: str | torch.device) -> Mnist:
        return Mnist(self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
                     self.test_y.to(device), self.checksum, self.dataset)


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "data")).resolve()


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _raw_dir(image_set: ImageSet, root: Path) -> Path:
    return root / image_set.torchvision_class / "raw"  # where torchvision.datasets.<class> looks


def _find_source_file(image_set: ImageSet, source: Path, name: str) -> Path:
    for candidate in (source / name, source / f"{name}.gz", _raw_dir(image_set, source) / name):
        if candidate.is_file():
            return candidate
    raise DataUnavailable(f"{name} (or {name}.gz) not found in {source}; {image_set.how_to_provide}")


def _import_file(image_set: ImageSet, source_file: Path, target: Path, expected_md5: str) -> None:
    """Decompress into a temporary file, check it, then move it into place atomically.

    Reading the source and writing the copy fail with different messages: a full or read-only data
    root is not a problem of the folder the user named.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise _cannot_write(image_set, target.parent, exc) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for block in _blocks(source_file):
                try:
                    out.write(block)
                except OSError as exc:
                    raise _cannot_write(image_set, target.parent, exc) from None
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise _cannot_write(image_set, target.parent, exc) from None
        actual = _md5(tmp)
        if actual != expected_md5:
            raise _mismatch(image_set, source_file, actual, expected_md5)
        os.replace(tmp, target)
    except OSError as exc:  # closing the copy or moving it into place
        raise _cannot_write(image_set, target.parent, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _blocks(source_file: Path, size: int = 1 << 22) -> Iterator[bytes]:
    """The decompressed bytes of `source_file` (gzipped or raw IDX) in blocks; unreadable input is named."""
    opener = gzip.open if source_file.suffix == ".gz" else open
    try:
        with opener(source_file, "rb") as src:
            while block := src.read(size):
                yield block
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataUnavailable(f"cannot read {source_file}: {exc}") from None


def _decompressed_md5(source_file: Path) -> str:
    digest = hashlib.md5()
    for block in _blocks(source_file):
        digest.update(block)
    return digest.hexdigest()


def _mismatch(image_set: ImageSet, source_file: Path, actual: str, expected: str) -> DataUnavailable:
    return DataUnavailable(f"checksum mismatch for {source_file}: decompressed MD5 is {actual}, "
                           f"expected {expected} (corrupted or not the original {image_set.title})")


def _cannot_write(image_set: ImageSet, folder: Path, exc: OSError) -> DataUnavailable:
    return DataUnavailable(f"cannot write the {image_set.title} copy in {folder}: {exc.strerror or exc}; free space "
                           f"there or set {ROOT_ENV} to a writable folder with about 60 MB free")


def _verified(image_set: ImageSet, raw: Path) -> dict[str, str]:
    """Per-file MD5s of the files in `raw`; raises if any is missing or altered."""
    sums = {}
    for name, expected in image_set.md5.items():
        path = raw / name
        if not path.is_file():
            raise FileNotFoundError(path)
        actual = _md5(path)
        if actual != expected:
            raise DataUnavailable(f"checksum mismatch for {path}: MD5 is {actual}, expected {expected}; "
                                  f"delete it and {image_set.how_to_provide}")
        sums[name] = actual
    return sums


def prepare_images(image_set: ImageSet, root: Path | None = None, source: Path | str | None = None) -> Path:
    """Make `root` hold verified raw files of `image_set`, importing or downloading what is missing.

    A folder the user names (`source`, else the set's `source_env`) is always checked, also when
    `root` already holds a good copy: naming a folder that is missing or holds other files must
    fail, not train on the old copy in silence. Without one: the files already in `root`; else
    torchvision's download; else a `DataUnavailable` saying how to provide the files.
    """
    root = Path(root) if root else default_root()
    raw = _raw_dir(image_set, root)
    source = source or os.environ.get(image_set.source_env) or None
    if source:
        with _no_empty_folders_left(raw):
            _import_from(image_set, Path(source).expanduser(), root)
        return root
    try:
        _verified(image_set, raw)
        return root
    except FileNotFoundError:
        pass
    try:
        _torchvision_class(image_set)(str(root), train=True, download=True)
        _verified(image_set, raw)
    except (RuntimeError, OSError, FileNotFoundError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataUnavailable(f"{image_set.title} is not in {raw} and could not be downloaded ({reason}); "
                              f"{image_set.how_to_provide}") from None
    return root


def prepare_mnist(root: Path | None = None, source: Path | str | None = None) -> Path:
    """`prepare_images` of MNIST."""
    return prepare_images(MNIST, root, source)


def _torchvision_class(image_set: ImageSet) -> type:
    import torchvision.datasets

    return getattr(torchvision.datasets, image_set.torchvision_class)


@contextmanager
def _no_empty_folders_left(raw: Path) -> Iterator[None]:
    """A failed import leaves no trace: the folders it created for the copy go again if they stayed empty."""
    created = [folder for folder in (raw, raw.parent, raw.parent.parent) if not folder.exists()]
    try:
        yield
    except BaseException:
        for folder in created:
            with suppress(OSError):
                folder.rmdir()
        raise


def _import_from(image_set: ImageSet, source: Path, root: Path) -> None:
    """Check every file of `source` and make `root` hold verified copies of them.

    Decompressing and hashing a source costs about a second, so a source file
    whose size and modification time are those recorded when it last passed is
    not read again (`SOURCES_RECORD` in `root`).
    """
    if not source.is_dir():
        raise DataUnavailable(f"{image_set.title} folder {source} does not exist; {image_set.how_to_provide}")
    raw = _raw_dir(image_set, root)
    record = _read_record(image_set, root)
    for name, expected in image_set.md5.items():
        source_file = _find_source_file(image_set, source, name)
        key, signature = str(source_file.resolve()), _signature(source_file)
        target = raw / name
        copied = target.is_file() and _md5(target) == expected
        if copied and record.get(key) == signature:
            continue
        if copied:
            actual = _decompressed_md5(source_file)
            if actual != expected:
                raise _mismatch(image_set, source_file, actual, expected)
        else:
            _import_file(image_set, source_file, target, expected)
        record[key] = signature
    _write_record(image_set, root, record)


def _signature(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _record_path(image_set: ImageSet, root: Path) -> Path:
    return root / image_set.torchvision_class / SOURCES_RECORD


def _read_record(image_set: ImageSet, root: Path) -> dict[str, list[int]]:
    try:
        record = json.loads(_record_path(image_set, root).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(image_set: ImageSet, root: Path, record: dict[str, list[int]]) -> None:
    """Best effort: without the record the next check reads the sources again, nothing worse."""
    path = _record_path(image_set, root)
    try:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def dataset_checksum(image_set: ImageSet = MNIST) -> str:
    """One MD5 naming the whole dataset: the hash of the four files' MD5s in a fixed order."""
    return image_set.checksum()


def _normalise(image_set: ImageSet, images: torch.Tensor) -> torch.Tensor:
    return ((images.float() / 255.0 - image_set.mean) / image_set.std).unsqueeze(1).contiguous()


@functools.lru_cache(maxsize=4)
def _load_cached(image_set: ImageSet, root: str) -> Mnist:
    dataset = _torchvision_class(image_set)
    train = dataset(root, train=True, download=False)
    test = dataset(root, train=False, download=False)
    return Mnist(_normalise(image_set, train.data), train.targets.long(), _normalise(image_set, test.data),
                 test.targets.long(), image_set.checksum(), image_set.name)


def load_images(image_set: ImageSet, root: Path | None = None, source: Path | str | None = None) -> Mnist:
    """Verified, normalised images of `image_set` on the CPU, read once per process."""
    root = prepare_images(image_set, root, source)
    return _load_cached(image_set, str(root))


def load_mnist(root: Path | None = None, source: Path | str | None = None) -> Mnist:
    """`load_images` of MNIST."""
    return load_images(MNIST, root, source)


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` examples drawn without replacement by `seed` (all of them when n is None or too large)."""
    if n is None or n >= len(x):
        return x, y
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[index], y[index]
