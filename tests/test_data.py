"""MNIST import: checksums of the decompressed bytes, clear errors when data are missing or altered."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from mounts import mounted_tmpfs

from hw1track.errors import DataUnavailable
from hw1track.training.data import (FASHION_MNIST, MNIST_MD5, ROOT_ENV, SOURCES_RECORD, dataset_checksum, load_images,
                                    load_mnist, prepare_images, prepare_mnist, subset)


def test_mnist_is_in_memory_normalised_and_complete(data_root):
    mnist = load_mnist(data_root)
    assert mnist.train_x.shape == (60_000, 1, 28, 28) and mnist.test_x.shape == (10_000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.float32 and mnist.train_y.dtype == torch.int64
    assert abs(mnist.train_x.mean().item()) < 0.01 and abs(mnist.train_x.std().item() - 1) < 0.01
    assert torch.bincount(mnist.test_y).tolist()[:3] == [980, 1135, 1032]  # the published test class counts
    assert mnist.checksum == dataset_checksum()


def test_import_accepts_raw_idx_files(tmp_path, data_root):
    source = tmp_path / "raw-source"
    source.mkdir()
    for name in MNIST_MD5:
        shutil.copy(data_root / "MNIST" / "raw" / name, source / name)
    root = prepare_mnist(tmp_path / "root", source)
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(MNIST_MD5)


def test_corrupted_file_fails_with_checksum_mismatch(tmp_path, mnist_source):
    source = tmp_path / "corrupt"
    source.mkdir()
    for name in MNIST_MD5:
        shutil.copy(mnist_source / f"{name}.gz", source / f"{name}.gz")
    with gzip.open(mnist_source / "t10k-labels-idx1-ubyte.gz") as original:
        labels = bytearray(original.read())
    labels[-1] = (labels[-1] + 1) % 10
    with gzip.open(source / "t10k-labels-idx1-ubyte.gz", "wb") as altered:
        altered.write(bytes(labels))
    with pytest.raises(DataUnavailable, match="checksum mismatch for .*t10k-labels-idx1-ubyte.gz"):
        prepare_mnist(tmp_path / "root", source)
    assert not (tmp_path / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists()


def test_truncated_gzip_fails_clearly(tmp_path, mnist_source):
    source = tmp_path / "truncated"
    source.mkdir()
    for name in MNIST_MD5:
        shutil.copy(mnist_source / f"{name}.gz", source / f"{name}.gz")
    data = (source / "train-images-idx3-ubyte.gz").read_bytes()
    (source / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataUnavailable, match="cannot read .*train-images-idx3-ubyte.gz"):
        prepare_mnist(tmp_path / "root", source)


def _copy_of(source, folder):
    folder.mkdir()
    for name in MNIST_MD5:
        shutil.copy(source / f"{name}.gz", folder / f"{name}.gz")
    return folder


def _other_dataset(mnist_source, tmp_path):
    """Fashion-MNIST when it lies beside MNIST (same file names, other images), else MNIST with labels shifted."""
    fashion = mnist_source.parent / "fashion-mnist"
    if (fashion / "t10k-labels-idx1-ubyte.gz").is_file():
        return fashion
    other = _copy_of(mnist_source, tmp_path / "other")
    with gzip.open(mnist_source / "t10k-labels-idx1-ubyte.gz") as original:
        labels = bytearray(original.read())
    labels[8:] = bytes((label + 1) % 10 for label in labels[8:])
    with gzip.open(other / "t10k-labels-idx1-ubyte.gz", "wb") as altered:
        altered.write(bytes(labels))
    return other


def test_a_named_folder_is_checked_even_when_the_root_already_holds_mnist(tmp_path, data_root, mnist_source):
    other = _other_dataset(mnist_source, tmp_path)
    with pytest.raises(DataUnavailable, match=f"checksum mismatch for {other}/.*-ubyte.gz"):
        prepare_mnist(data_root, other)
    with pytest.raises(DataUnavailable, match="does not exist"):
        prepare_mnist(data_root, tmp_path / "nowhere")
    assert prepare_mnist(data_root, mnist_source) == data_root  # the good copy is still there and still used


def test_a_checked_source_is_read_again_once_it_changes(tmp_path, mnist_source):
    source = _copy_of(mnist_source, tmp_path / "source")
    root = prepare_mnist(tmp_path / "root", source)
    record = json.loads((root / "MNIST" / SOURCES_RECORD).read_text())
    assert sorted(record) == sorted(str((source / f"{name}.gz").resolve()) for name in MNIST_MD5)
    prepare_mnist(root, source)  # unchanged: passes on the record
    # passing on the record means not reading the file: bytes changed behind an unchanged size and mtime go unseen
    labels = source / "t10k-labels-idx1-ubyte.gz"
    stat = labels.stat()
    with open(labels, "r+b") as file:
        file.seek(stat.st_size // 2)
        file.write(bytes([file.read(1)[0] ^ 0xFF]))
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    prepare_mnist(root, source)
    other = _other_dataset(mnist_source, tmp_path)
    shutil.copy(other / "t10k-labels-idx1-ubyte.gz", source / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataUnavailable, match="checksum mismatch for .*t10k-labels-idx1-ubyte.gz"):
        prepare_mnist(root, source)


@pytest.mark.slow
def test_run_with_another_dataset_named_fails_in_one_line_before_the_store(tmp_path, mnist_source):
    other = _other_dataset(mnist_source, tmp_path)
    empty_root = tmp_path / "root"
    done = subprocess.run([sys.executable, "-m", "hw1track.cli", "run", "part1_3b", "--mnist-dir", str(other)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, ROOT_ENV: str(empty_root)})
    assert done.returncode == 1
    assert done.stderr.startswith("hw1track: error: checksum mismatch for ") and done.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists() and not empty_root.exists()  # not even an empty folder


def test_a_full_data_root_is_blamed_not_the_source(tmp_path, mnist_source):
    root = tmp_path / "small-disk"
    with mounted_tmpfs(root, size="2m"):
        with pytest.raises(DataUnavailable, match=f"cannot write the MNIST copy in {root}/MNIST/raw: "
                                                  "No space left on device; free space there"):
            prepare_mnist(root, mnist_source)
        assert not list(root.iterdir())  # no half copy, not even the folders made for it


def test_missing_folder_says_how_to_provide_the_files(tmp_path):
    with pytest.raises(DataUnavailable, match="does not exist; set HW1TRACK_MNIST_DIR"):
        prepare_mnist(tmp_path / "root", tmp_path / "nowhere")


def test_no_data_and_no_download_says_how_to_provide_the_files(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.delenv("HW1TRACK_MNIST_DIR", raising=False)
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # a closed port: the download fails fast
    with pytest.raises(DataUnavailable, match="could not be downloaded .*HW1TRACK_MNIST_DIR"):
        prepare_mnist(tmp_path / "empty-root")


def test_subsets_are_fixed_by_seed(data_root):
    mnist = load_mnist(data_root)
    a = subset(mnist.train_x, mnist.train_y, 500, seed=3)
    b = subset(mnist.train_x, mnist.train_y, 500, seed=3)
    c = subset(mnist.train_x, mnist.train_y, 500, seed=4)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_fashion_mnist_loads_through_torchvision_with_its_own_checksum_and_statistics(tmp_path, fashion_source):
    root = tmp_path / "root"
    fashion = load_images(FASHION_MNIST, root, fashion_source)
    assert sorted(p.name for p in (root / "FashionMNIST" / "raw").iterdir()) == sorted(FASHION_MNIST.md5)
    assert fashion.train_x.shape == (60_000, 1, 28, 28) and fashion.test_x.shape == (10_000, 1, 28, 28)
    assert torch.bincount(fashion.train_y).tolist() == [6_000] * 10  # Fashion-MNIST's classes are balanced
    # its own statistics normalise it, as MNIST's do MNIST: recomputed from the pixels here
    assert abs(fashion.train_x.mean().item()) < 0.01 and abs(fashion.train_x.std().item() - 1) < 0.01
    assert fashion.checksum == FASHION_MNIST.checksum() != dataset_checksum()
    mnist = load_mnist()
    assert not torch.equal(fashion.train_x[:100], mnist.train_x[:100])


def test_mnist_files_named_as_fashion_mnist_fail_its_checksums_and_leave_nothing(tmp_path, mnist_source, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST.source_env, str(mnist_source))
    root = tmp_path / "root"
    with pytest.raises(DataUnavailable, match=r"checksum mismatch for .*idx.*not the original Fashion-MNIST"):
        prepare_images(FASHION_MNIST, root)
    assert not (root / "FashionMNIST").exists()


def test_without_a_fashion_mnist_folder_or_download_one_line_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.delenv(FASHION_MNIST.source_env, raising=False)
    with pytest.raises(DataUnavailable, match="set HW1TRACK_FASHION_MNIST_DIR") as failure:
        prepare_images(FASHION_MNIST, tmp_path / "nowhere-root", tmp_path / "missing")
    assert "\n" not in str(failure.value) and "Fashion-MNIST folder" in str(failure.value)
