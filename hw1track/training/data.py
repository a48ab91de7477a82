"""MNIST as in-memory tensors, loaded by torchvision from a local root.

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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch

from hw1track.errors import DataUnavailable

# MD5 of each decompressed file: the published checksums of the original MNIST.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Mean and standard deviation of the training pixels scaled to [0, 1].
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

SOURCE_ENV = "HW1TRACK_MNIST_DIR"
ROOT_ENV = "HW1TRACK_DATA_ROOT"
SOURCES_RECORD = "verified-sources.json"  # source files already checked: path -> [size, mtime_ns]
HOW_TO_PROVIDE = (f"set {SOURCE_ENV} (or pass --mnist-dir) to a folder holding the four MNIST IDX files "
                  "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                  "t10k-labels-idx1-ubyte, gzipped or not)")


@dataclass(frozen=True)
class Mnist:
    """Normalised images (N, 1, 28, 28) float32 and labels (N,) int64, plus the data's identity."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    checksum: str

    def to(self, device: str | torch.device) -> Mnist:
        return Mnist(self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
                     self.test_y.to(device), self.checksum)


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "data")).resolve()


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _raw_dir(root: Path) -> Path:
    return root / "MNIST" / "raw"  # where torchvision.datasets.MNIST looks


def _find_source_file(source: Path, name: str) -> Path:
    for candidate in (source / name, source / f"{name}.gz", source / "MNIST" / "raw" / name):
        if candidate.is_file():
            return candidate
    raise DataUnavailable(f"{name} (or {name}.gz) not found in {source}; {HOW_TO_PROVIDE}")


def _import_file(source_file: Path, target: Path, expected_md5: str) -> None:
    """Decompress into a temporary file, check it, then move it into place atomically.

    Reading the source and writing the copy fail with different messages: a full or read-only data
    root is not a problem of the folder the user named.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise _cannot_write(target.parent, exc) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for block in _blocks(source_file):
                try:
                    out.write(block)
                except OSError as exc:
                    raise _cannot_write(target.parent, exc) from None
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise _cannot_write(target.parent, exc) from None
        actual = _md5(tmp)
        if actual != expected_md5:
            raise _mismatch(source_file, actual, expected_md5)
        os.replace(tmp, target)
    except OSError as exc:  # closing the copy or moving it into place
        raise _cannot_write(target.parent, exc) from None
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


def _mismatch(source_file: Path, actual: str, expected: str) -> DataUnavailable:
    return DataUnavailable(f"checksum mismatch for {source_file}: decompressed MD5 is {actual}, "
                           f"expected {expected} (corrupted or not the original MNIST)")


def _cannot_write(folder: Path, exc: OSError) -> DataUnavailable:
    return DataUnavailable(f"cannot write the MNIST copy in {folder}: {exc.strerror or exc}; free space there "
                           f"or set {ROOT_ENV} to a writable folder with about 60 MB free")


def _verified(raw: Path) -> dict[str, str]:
    """Per-file MD5s of the files in `raw`; raises if any is missing or altered."""
    sums = {}
    for name, expected in MNIST_MD5.items():
        path = raw / name
        if not path.is_file():
            raise FileNotFoundError(path)
        actual = _md5(path)
        if actual != expected:
            raise DataUnavailable(f"checksum mismatch for {path}: MD5 is {actual}, expected {expected}; "
                                  f"delete it and {HOW_TO_PROVIDE}")
        sums[name] = actual
    return sums


def prepare_mnist(root: Path | None = None, source: Path | str | None = None) -> Path:
    """Make `root` hold verified raw MNIST files, importing or downloading what is missing.

    A folder the user names (`source`, else $HW1TRACK_MNIST_DIR) is always checked, also when
    `root` already holds a good copy: naming a folder that is missing or holds other files must
    fail, not train on the old copy in silence. Without one: the files already in `root`; else
    torchvision's download; else a `DataUnavailable` saying how to provide the files.
    """
    root = Path(root) if root else default_root()
    raw = _raw_dir(root)
    source = source or os.environ.get(SOURCE_ENV) or None
    if source:
        with _no_empty_folders_left(raw):
            _import_from(Path(source).expanduser(), root)
        return root
    try:
        _verified(raw)
        return root
    except FileNotFoundError:
        pass
    try:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=True, download=True)
        _verified(raw)
    except (RuntimeError, OSError, FileNotFoundError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataUnavailable(f"MNIST is not in {raw} and could not be downloaded ({reason}); "
                              f"{HOW_TO_PROVIDE}") from None
    return root


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


def _import_from(source: Path, root: Path) -> None:
    """Check every file of `source` and make `root` hold verified copies of them.

    Decompressing and hashing a source costs about a second, so a source file
    whose size and modification time are those recorded when it last passed is
    not read again (`SOURCES_RECORD` in `root`).
    """
    if not source.is_dir():
        raise DataUnavailable(f"MNIST folder {source} does not exist; {HOW_TO_PROVIDE}")
    raw = _raw_dir(root)
    record = _read_record(root)
    for name, expected in MNIST_MD5.items():
        source_file = _find_source_file(source, name)
        key, signature = str(source_file.resolve()), _signature(source_file)
        target = raw / name
        copied = target.is_file() and _md5(target) == expected
        if copied and record.get(key) == signature:
            continue
        if copied:
            actual = _decompressed_md5(source_file)
            if actual != expected:
                raise _mismatch(source_file, actual, expected)
        else:
            _import_file(source_file, target, expected)
        record[key] = signature
    _write_record(root, record)


def _signature(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _record_path(root: Path) -> Path:
    return root / "MNIST" / SOURCES_RECORD


def _read_record(root: Path) -> dict[str, list[int]]:
    try:
        record = json.loads(_record_path(root).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(root: Path, record: dict[str, list[int]]) -> None:
    """Best effort: without the record the next check reads the sources again, nothing worse."""
    path = _record_path(root)
    try:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def dataset_checksum() -> str:
    """One MD5 naming the whole dataset: the hash of the four files' MD5s in a fixed order."""
    joined = "".join(MNIST_MD5[name] for name in sorted(MNIST_MD5))
    return hashlib.md5(joined.encode()).hexdigest()


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1).contiguous()


@functools.lru_cache(maxsize=2)
def _load_cached(root: str) -> Mnist:
    from torchvision.datasets import MNIST

    train = MNIST(root, train=True, download=False)
    test = MNIST(root, train=False, download=False)
    return Mnist(_normalise(train.data), train.targets.long(), _normalise(test.data), test.targets.long(),
                 dataset_checksum())


def load_mnist(root: Path | None = None, source: Path | str | None = None) -> Mnist:
    """Verified, normalised MNIST on the CPU, read once per process."""
    root = prepare_mnist(root, source)
    return _load_cached(str(root))


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` examples drawn without replacement by `seed` (all of them when n is None or too large)."""
    if n is None or n >= len(x):
        return x, y
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[index], y[index]
