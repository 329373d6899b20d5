"""CIFAR-100 loading, safe unpickling, download and the synthetic stand-in.

All data is generated here; the only network traffic is to a server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import pickle
import pickletools
import socket
import sys
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cvtrain.data import synthetic
from cvtrain.data.cifar import (
    ALLOWED_GLOBALS,
    COARSE_LABEL_NAMES,
    FINE_LABEL_NAMES,
    FINE_TO_COARSE,
    ImageData,
    download,
    load_cifar100,
    safe_unpickle,
    write_synthetic_cifar100,
)
from cvtrain.errors import DataError
from cvtrain.paths import cache_dir

EDITIONS = ("binary", "python")
FOLDER = {"binary": "cifar-100-binary", "python": "cifar-100-python"}


def synth(dest: Path, fmt: str, classes: int = 25, train: int = 8, test: int = 3, seed: int = 0):
    return write_synthetic_cifar100(
        dest, classes=classes, train_per_class=train, test_per_class=test, fmt=fmt, seed=seed
    )


def extract(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover
            tar.extractall(dest)
    return dest


def retar(src: Path, dest: Path, replace: dict[str, bytes]) -> Path:
    """Copy a .tar.gz, swapping the contents of members named by basename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(src) as tin, tarfile.open(dest, "w:gz") as tout:
        for member in tin.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile():
                data = replace.get(base, tin.extractfile(member).read())
                member.size = len(data)
                tout.addfile(member, io.BytesIO(data))
            else:
                tout.addfile(member)
    return dest


def member_bytes(archive: Path, base: str) -> bytes:
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if member.name.endswith("/" + base):
                return tar.extractfile(member).read()
    raise KeyError(base)


def check_data(data: ImageData, classes: int, train: int, test: int) -> None:
    assert data.x_train.shape == (classes * train, 32, 32, 3)
    assert data.x_test.shape == (classes * test, 32, 32, 3)
    assert data.x_train.dtype == data.x_test.dtype == np.uint8
    assert data.y_train.dtype == data.y_test.dtype == np.int64
    assert data.y_train.shape == (classes * train,)
    assert data.x_train.flags.c_contiguous
    for y, per in ((data.y_train, train), (data.y_test, test)):
        assert y.min() >= 0 and y.max() < classes
        assert np.bincount(y, minlength=classes).tolist() == [per] * classes
    assert data.class_names == list(FINE_LABEL_NAMES[:classes])
    assert len(data.sha256) == 64 and data.source.exists()
    assert data.num_classes == classes


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "cache"))
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT", 10.0)
    # Nothing in this file may reach the real download URLs.
    for edition in EDITIONS:
        monkeypatch.setitem(
            download.DOWNLOADS, edition, {"url": "http://127.0.0.1:9/never", "md5": "0" * 32}
        )


# --------------------------------------------------------------------------- constants


def test_label_names_are_the_official_ones():
    assert len(FINE_LABEL_NAMES) == len(set(FINE_LABEL_NAMES)) == 100
    assert len(COARSE_LABEL_NAMES) == len(set(COARSE_LABEL_NAMES)) == 20
    assert FINE_LABEL_NAMES[:3] == ("apple", "aquarium_fish", "baby")
    assert FINE_LABEL_NAMES[67:69] == ("ray", "road") and FINE_LABEL_NAMES[-1] == "worm"
    assert list(FINE_LABEL_NAMES) == sorted(FINE_LABEL_NAMES)
    assert np.bincount(FINE_TO_COARSE).tolist() == [5] * 20
    assert COARSE_LABEL_NAMES[FINE_TO_COARSE[FINE_LABEL_NAMES.index("whale")]] == "aquatic_mammals"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("CVTRAIN_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "cvtrain"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "cvtrain"
    assert not (tmp_path / "home").exists()  # not created by asking


# --------------------------------------------------------------------------- both editions


@pytest.mark.parametrize("fmt", EDITIONS)
def test_load_archive_extracted_folder_and_parent(tmp_path, fmt):
    archive = synth(tmp_path / "src", fmt)
    assert archive == tmp_path / "src" / f"cifar-100-{fmt}.tar.gz"
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    expected = {
        "binary": ["SYNTHETIC", "coarse_label_names.txt", "fine_label_names.txt", "test.bin",
                   "train.bin"],
        "python": ["SYNTHETIC", "meta", "test", "train"],
    }[fmt]
    assert names == [FOLDER[fmt]] + [f"{FOLDER[fmt]}/{n}" for n in expected]

    from_archive = load_cifar100(archive, num_classes=25, progress=False)
    check_data(from_archive, 25, 8, 3)
    assert from_archive.synthetic  # the marker, whatever the file is called
    assert from_archive.source == archive
    assert from_archive.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()

    extracted = extract(archive, tmp_path / "x") / FOLDER[fmt]
    from_folder = load_cifar100(extracted, num_classes=25, edition=fmt)
    check_data(from_folder, 25, 8, 3)
    assert from_folder.synthetic
    assert from_folder.source == extracted
    assert from_folder.sha256 != from_archive.sha256
    assert from_folder.sha256 == load_cifar100(extracted).sha256  # stable
    assert load_cifar100(tmp_path / "x").source == extracted  # parent of the extracted folder

    from_parent = load_cifar100(str(tmp_path / "src"), num_classes=25, edition="auto")
    assert from_parent.source == archive
    for other in (from_folder, from_parent):
        np.testing.assert_array_equal(other.x_train, from_archive.x_train)
        np.testing.assert_array_equal(other.y_train, from_archive.y_train)
        np.testing.assert_array_equal(other.x_test, from_archive.x_test)
        np.testing.assert_array_equal(other.y_test, from_archive.y_test)


def test_binary_and_python_editions_agree_and_match_the_official_layout(tmp_path):
    binary = load_cifar100(synth(tmp_path / "b", "binary", seed=7), progress=False)
    python = load_cifar100(synth(tmp_path / "p", "python", seed=7), progress=False)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(binary, name), getattr(python, name))
    assert binary.class_names == python.class_names

    # Binary records: coarse byte, fine byte, then R, G, B planes of 32x32 row-major.
    train_bin = member_bytes(tmp_path / "b" / "cifar-100-binary.tar.gz", "train.bin")
    first = np.frombuffer(train_bin[:3074], np.uint8)
    assert first[1] == binary.y_train[0] and first[0] == FINE_TO_COARSE[first[1]]
    np.testing.assert_array_equal(first[2:1026].reshape(32, 32), binary.x_train[0, :, :, 0])
    np.testing.assert_array_equal(first[2050:].reshape(32, 32), binary.x_train[0, :, :, 2])
    names = member_bytes(tmp_path / "b" / "cifar-100-binary.tar.gz", "fine_label_names.txt")
    assert names.decode().split() == list(FINE_LABEL_NAMES)
    coarse = member_bytes(tmp_path / "b" / "cifar-100-binary.tar.gz", "coarse_label_names.txt")
    assert coarse.decode().split() == list(COARSE_LABEL_NAMES)

    # Python edition: what the official instructions do (pickle.load, encoding="bytes").
    archive = tmp_path / "p" / "cifar-100-python.tar.gz"
    batch = pickle.loads(member_bytes(archive, "train"), encoding="bytes")
    keys = [b"batch_label", b"coarse_labels", b"data", b"filenames", b"fine_labels"]
    assert sorted(batch) == keys
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (200, 3072)
    assert all(isinstance(f, bytes) for f in batch[b"filenames"])
    assert batch[b"coarse_labels"] == [FINE_TO_COARSE[f] for f in batch[b"fine_labels"]]
    meta = pickle.loads(member_bytes(archive, "meta"), encoding="bytes")
    assert meta[b"fine_label_names"] == [n.encode() for n in FINE_LABEL_NAMES]
    assert meta[b"coarse_label_names"] == [n.encode() for n in COARSE_LABEL_NAMES]


@pytest.mark.parametrize("member", ["train", "meta"])
def test_python_edition_pickles_look_like_python2_protocol2(tmp_path, member):
    data = member_bytes(synth(tmp_path, "python"), member)
    ops = list(pickletools.genops(data))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    names = {op.name for op, _, _ in ops}
    assert "SHORT_BINSTRING" in names
    assert not names & {"BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINBYTES", "BINBYTES"}
    assert not names & {"STACK_GLOBAL", "FRAME", "NEWOBJ", "EXT1", "EXT2", "EXT4"}
    globals_ = {arg.replace(" ", ".") for op, arg, _ in ops if op.name == "GLOBAL"}
    if member == "train":
        assert "BINSTRING" in names  # the pixel data
        assert globals_ == {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}
    else:
        assert globals_ == set()
    assert globals_ <= ALLOWED_GLOBALS


def test_num_classes_keeps_only_lower_labels_in_file_order(tmp_path):
    archive = synth(tmp_path, "binary", classes=30, train=6, test=2)
    everything = load_cifar100(archive, num_classes=30)
    data = load_cifar100(archive, num_classes=25)
    check_data(data, 25, 6, 2)
    keep = everything.y_train < 25
    np.testing.assert_array_equal(data.y_train, everything.y_train[keep])
    np.testing.assert_array_equal(data.x_train, everything.x_train[keep])
    one = load_cifar100(archive, num_classes=1)
    assert one.class_names == ["apple"] and set(one.y_test.tolist()) == {0}


def test_auto_prefers_binary_and_explicit_edition_picks_either(tmp_path):
    synth(tmp_path, "binary", seed=1)
    synth(tmp_path, "python", seed=2)
    assert load_cifar100(tmp_path).source.name == "cifar-100-binary.tar.gz"
    assert load_cifar100(tmp_path, edition="binary").source.name == "cifar-100-binary.tar.gz"
    assert load_cifar100(tmp_path, edition="python").source.name == "cifar-100-python.tar.gz"


def test_edition_is_detected_from_members_not_the_file_name(tmp_path):
    archive = synth(tmp_path / "src", "python")
    renamed = tmp_path / "data.tar.gz"
    archive.rename(renamed)
    data = load_cifar100(renamed, edition="python")
    check_data(data, 25, 8, 3)
    with pytest.raises(DataError) as err:
        load_cifar100(renamed, edition="binary")
    assert str(renamed) in one_line(err) and "python edition" in str(err.value)


def test_misnamed_archive_in_a_folder_is_read_by_its_members(tmp_path):
    archive = synth(tmp_path / "src", "python")
    (tmp_path / "d").mkdir()
    archive.rename(tmp_path / "d" / "cifar-100-binary.tar.gz")
    check_data(load_cifar100(tmp_path / "d"), 25, 8, 3)
    with pytest.raises(DataError) as err:
        load_cifar100(tmp_path / "d", edition="binary")
    assert "holds the python edition" in one_line(err)


def test_edition_mismatch_names_the_path(tmp_path):
    synth(tmp_path / "d", "binary")
    with pytest.raises(DataError) as err:
        load_cifar100(tmp_path / "d", edition="python")
    text = one_line(err)
    assert str(tmp_path / "d") in text and "cifar-100-python.tar.gz" in text

    extracted = extract(tmp_path / "d" / "cifar-100-binary.tar.gz", tmp_path / "x")
    with pytest.raises(DataError) as err:
        load_cifar100(extracted / "cifar-100-binary", edition="python")
    assert str(extracted / "cifar-100-binary") in one_line(err)


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(DataError) as err:
        load_cifar100(tmp_path / "nope")
    assert str(tmp_path / "nope") in one_line(err) and "does not exist" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_cifar100(tmp_path / "empty")
    assert "no CIFAR-100 data in" in one_line(err)
    extracted = extract(synth(tmp_path / "s", "binary"), tmp_path / "x") / "cifar-100-binary"
    (extracted / "test.bin").unlink()
    with pytest.raises(DataError) as err:
        load_cifar100(extracted)
    assert "test.bin" in one_line(err)


# --------------------------------------------------------------------------- corrupt data


def test_truncated_train_bin_in_folder_and_archive(tmp_path):
    archive = synth(tmp_path / "s", "binary")
    folder = extract(archive, tmp_path / "x") / "cifar-100-binary"
    train = folder / "train.bin"
    train.write_bytes(train.read_bytes()[:-1])
    with pytest.raises(DataError) as err:
        load_cifar100(folder)
    assert str(train) in one_line(err) and "3,074" in str(err.value)

    bad = retar(archive, tmp_path / "bad" / "cifar-100-binary.tar.gz", {"train.bin": b"x" * 5000})
    with pytest.raises(DataError) as err:
        load_cifar100(bad)
    assert "cifar-100-binary/train.bin" in one_line(err) and str(bad) in str(err.value)


def test_out_of_range_label_is_rejected(tmp_path):
    archive = synth(tmp_path / "s", "binary")
    records = bytearray(member_bytes(archive, "test.bin"))
    records[1] = 200
    bad = retar(archive, tmp_path / "bad" / "cifar-100-binary.tar.gz", {"test.bin": records})
    with pytest.raises(DataError) as err:
        load_cifar100(bad)
    assert "test.bin" in one_line(err) and "200" in str(err.value)


@pytest.mark.parametrize(
    "content",
    [
        b"this is not an archive at all\n" * 100,
        b"",
        b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"garbage" * 50,  # gzip magic, corrupt stream
    ],
    ids=["text", "empty", "bad-gzip"],
)
def test_not_a_tar_or_corrupt_gzip(tmp_path, content):
    path = tmp_path / "cifar-100-binary.tar.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_cifar100(path)
    assert str(path) in one_line(err)
    with pytest.raises(DataError) as err:
        load_cifar100(tmp_path)  # found by name in the folder
    assert str(path) in one_line(err)


def test_truncated_and_bitflipped_archives(tmp_path):
    archive = synth(tmp_path / "s", "python")
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        flipped[i] ^= 0xA5
    flip = tmp_path / "flip.tar.gz"
    flip.write_bytes(bytes(flipped))
    for path in (cut, flip):
        with pytest.raises(DataError) as err:
            load_cifar100(path)
        assert str(path) in one_line(err)


def test_tar_without_cifar_members(tmp_path):
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("photos/cat.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DataError) as err:
        load_cifar100(path)
    assert "not a CIFAR-100 archive" in one_line(err) and "photos/cat.jpg" in str(err.value)


def test_corrupt_python_batch_contents(tmp_path):
    archive = synth(tmp_path / "s", "python")
    pixels = np.zeros((2, 3072), np.uint8)
    cases = {
        "not-a-pickle": b"garbage that is not a pickle",
        "truncated": member_bytes(archive, "train")[:1000],
        "wrong-shape": pickle.dumps({b"data": pixels[:, :10], b"fine_labels": [0, 1]}, 2),
        "wrong-dtype": pickle.dumps({b"data": pixels.astype(float), b"fine_labels": [0, 1]}, 2),
        "label-count": pickle.dumps({b"data": pixels, b"fine_labels": [0]}, 2),
        "bad-labels": pickle.dumps({b"data": pixels, b"fine_labels": [b"a", b"b"]}, 2),
        "no-data": pickle.dumps({b"fine_labels": [0]}, 2),
        "a-list": pickle.dumps([1, 2, 3], 2),
    }
    for name, payload in cases.items():
        bad = retar(archive, tmp_path / name / "cifar-100-python.tar.gz", {"train": payload})
        with pytest.raises(DataError) as err:
            load_cifar100(bad)
        assert "cifar-100-python/train" in one_line(err), name


# --------------------------------------------------------------------------- malicious pickles


class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _exec_payload(marker: Path) -> bytes:
    import builtins

    code = f"open({str(marker)!r}, 'w').close()"
    return pickle.dumps({b"data": _Reduce(builtins.exec, code)}, protocol=2)


def test_malicious_pickle_in_archive_is_refused_and_never_runs(tmp_path):
    # The payload is live: plain pickle would run it.
    probe = tmp_path / "probe-marker"
    pickle.loads(_exec_payload(probe))
    assert probe.exists()

    marker = tmp_path / "pwned-marker"
    archive = synth(tmp_path / "s", "python")
    bad = retar(
        archive, tmp_path / "bad" / "cifar-100-python.tar.gz", {"train": _exec_payload(marker)}
    )
    with pytest.raises(DataError) as err:
        load_cifar100(bad)
    text = one_line(err)
    assert "refused to unpickle global" in text and "exec" in text
    assert "cifar-100-python/train" in text
    assert not marker.exists()

    # Same through an extracted folder.
    folder = extract(bad, tmp_path / "x") / "cifar-100-python"
    with pytest.raises(DataError) as err:
        load_cifar100(folder)
    assert "exec" in one_line(err) and str(folder / "train") in str(err.value)
    assert not marker.exists()


def _payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    import builtins
    import os
    import pathlib
    import subprocess

    cmd = f"touch {marker}"
    return {
        "os.system-proto0": (f"cos\nsystem\n(S'{cmd}'\ntR.".encode(), "os.system"),
        "posix.system": (pickle.dumps(_Reduce(os.system, cmd), protocol=2), "system"),
        "subprocess.Popen": (
            pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(marker)]), 2),
            "subprocess.Popen",
        ),
        "Popen-stack-global": (
            pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(marker)]), 4),
            "subprocess.Popen",
        ),
        "builtins.eval": (
            pickle.dumps(_Reduce(builtins.eval, f"open({str(marker)!r}, 'w')"), 4),
            "builtins.eval",
        ),
        "builtin-eval-py2": (
            pickle.dumps(_Reduce(builtins.eval, f"open({str(marker)!r}, 'w')"), 2),
            "__builtin__.eval",
        ),
        "pathlib.touch": (
            pickle.dumps(_Reduce(pathlib.Path.touch, pathlib.Path(marker)), 4),
            "Path.touch",
        ),
        "copyreg": (b"\x80\x02ccopy_reg\n_reconstructor\n.", "copy_reg._reconstructor"),
        "numpy-other": (b"\x80\x02cnumpy\nload\n.", "numpy.load"),
        "codecs-not-latin1": (
            b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",
            "_codecs.encode",
        ),
    }


@pytest.mark.parametrize(
    "name",
    list(_payloads(Path("/x"))),
)
def test_safe_unpickle_refuses_dangerous_globals(tmp_path, name):
    marker = tmp_path / "marker"
    payload, refused = _payloads(marker)[name]
    with pytest.raises(DataError) as err:
        safe_unpickle(payload, "evil.pkl")
    text = one_line(err)
    assert "refused to unpickle" in text and refused in text and "evil.pkl" in text
    assert not marker.exists()


def test_safe_unpickle_reads_python3_pickles_and_wraps_errors():
    array = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072) % 251
    obj = {b"data": array, b"fine_labels": [1, 2], b"batch_label": b"b", "name": "x"}
    for protocol in (2, 3, 4):
        back = safe_unpickle(pickle.dumps(obj, protocol=protocol), "py3.pkl")
        np.testing.assert_array_equal(back[b"data"], array)
        assert back[b"batch_label"] == b"b" and back["name"] == "x"
    with pytest.raises(DataError) as err:
        safe_unpickle(b"\x80\x02}q\x00(", "short.pkl")
    assert "short.pkl" in one_line(err)
    with pytest.raises(DataError):
        safe_unpickle(b"\x80\x02(P1\n.", "persid.pkl")


# --------------------------------------------------------------------------- download


class _Server:
    def __init__(self, root: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # noqa: N802
                requests.append(self.path)
                super().do_GET()

        handler = functools.partial(Handler, directory=root)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    srv = _Server(root)
    yield srv, root
    srv.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(monkeypatch, url: str, archive: Path, fmt: str, md5: str | None = None):
    md5 = md5 or hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(download.DOWNLOADS, fmt, {"url": f"{url}/{archive.name}", "md5": md5})


@pytest.mark.parametrize("fmt", EDITIONS)
def test_download_verifies_and_caches(tmp_path, monkeypatch, server, fmt, capfd):
    srv, root = server
    archive = synth(root, fmt)
    _serve(monkeypatch, srv.url, archive, fmt)
    cache = tmp_path / "cache"
    edition = "auto" if fmt == "binary" else "python"

    data = load_cifar100(None, edition=edition, progress=True)
    check_data(data, 25, 8, 3)
    assert srv.requests == [f"/{archive.name}"]
    assert data.source == cache / archive.name
    assert data.sha256 == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert sorted(p.name for p in cache.iterdir()) == [archive.name]
    assert "downloading" in capfd.readouterr().err  # rich progress on stderr

    srv.stop()
    again = load_cifar100(None, edition=edition, progress=False, download=False)
    assert again.sha256 == data.sha256 and len(srv.requests) == 1
    np.testing.assert_array_equal(again.x_train, data.x_train)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch, server):
    srv, root = server
    archive = synth(root, "binary")
    _serve(monkeypatch, srv.url, archive, "binary", md5="f" * 32)
    with pytest.raises(DataError) as err:
        load_cifar100(None, progress=False)
    text = one_line(err)
    assert "checksum" in text and "f" * 32 in text and "set data.path" in text
    assert srv.url in text and str(tmp_path / "cache") in text
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_http_error_and_unreachable(tmp_path, monkeypatch, server):
    srv, _root = server
    monkeypatch.setitem(
        download.DOWNLOADS, "binary", {"url": f"{srv.url}/missing.tar.gz", "md5": "0"}
    )
    with pytest.raises(DataError) as err:
        load_cifar100(None, progress=False)
    assert "404" in one_line(err) and "set data.path" in str(err.value)

    url = f"http://127.0.0.1:{_closed_port()}/cifar-100-binary.tar.gz"
    monkeypatch.setitem(download.DOWNLOADS, "binary", {"url": url, "md5": "0" * 32})
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_cifar100(None, progress=False)
    text = one_line(err)
    assert text.startswith(f"no CIFAR-100 archive in {tmp_path / 'cache'} and downloading {url}")
    # the fix, as something to type: the option, through make, or the offline demo
    assert "set data.path to a local copy with `--set data.path=FILE`" in text
    assert text.endswith("or `make demo` trains on synthetic data offline")
    monkeypatch.setenv("CVTRAIN_MAKE", "run")
    with pytest.raises(DataError) as err:
        load_cifar100(None, progress=False)
    assert "with `make run ARGS='--set data.path=FILE'`" in one_line(err)
    monkeypatch.setenv("CVTRAIN_MAKE", "reproduce")
    with pytest.raises(DataError) as err:
        load_cifar100(None, progress=False)
    assert "with `make reproduce ARGS='--set cifar100:data.path=FILE'`" in one_line(err)
    assert time.monotonic() - start < 10
    assert not any(p.suffix == ".part" for p in (tmp_path / "cache").iterdir())


def test_no_download_when_disabled(tmp_path):
    with pytest.raises(DataError) as err:
        load_cifar100(None, download=False)
    assert "set data.path" in one_line(err) and str(tmp_path / "cache") in str(err.value)


# --------------------------------------------------------------------------- synthetic data


def test_only_the_synthetic_marker_makes_data_synthetic(tmp_path):
    """Real archives have no SYNTHETIC member: an archive or folder without it (or with a
    file of that name that is not cvtrain's marker) is real data, whatever its name."""
    archive = synth(tmp_path / "src", "binary")
    real = tmp_path / "real" / "cifar-100-binary.tar.gz"
    real.parent.mkdir()
    with tarfile.open(archive) as tin, tarfile.open(real, "w:gz") as tout:
        for member in tin.getmembers():
            if not member.name.endswith("/SYNTHETIC"):
                tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
    assert not load_cifar100(real, num_classes=25).synthetic
    folder = extract(real, tmp_path / "x") / FOLDER["binary"]
    assert not load_cifar100(folder, num_classes=25).synthetic
    (folder / "SYNTHETIC").write_text("a note of the user's own\n")
    assert not load_cifar100(folder, num_classes=25).synthetic


def test_synthetic_archives_are_deterministic(tmp_path):
    a = synth(tmp_path / "a", "binary", seed=3).read_bytes()
    b = synth(tmp_path / "b", "binary", seed=3).read_bytes()
    c = synth(tmp_path / "c", "binary", seed=4).read_bytes()
    assert a == b and a != c
    assert gzip.decompress(a)[:17] == b"cifar-100-binary/"


def test_synthetic_generation_is_fast():
    labels = np.repeat(np.arange(25), 600)  # 25 classes x (500 train + 100 test)
    start = time.perf_counter()
    images = synthetic._synthesize(labels, np.random.default_rng(0))
    elapsed = time.perf_counter() - start
    assert images.shape == (15000, 32, 32, 3) and images.dtype == np.uint8
    assert elapsed < 5, elapsed
    sample = images[::50].astype(np.float32)
    assert 40 < sample.mean() < 200 and sample.std() > 30


def _features(x: np.ndarray) -> np.ndarray:
    """Shift-invariant features: colour statistics and the luminance power spectrum."""
    x = x.astype(np.float32) / 255
    gray = x.mean(-1)
    spectrum = np.abs(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True)))
    spectrum = np.fft.fftshift(spectrum, axes=(1, 2))[:, 8:24, 8:24]
    spectrum = spectrum.reshape(-1, 8, 2, 8, 2).mean((2, 4)).reshape(len(x), -1)
    flat = x.reshape(len(x), -1, 3)
    colour = [flat.mean(1), flat.std(1), np.percentile(flat, 90, axis=1)]
    return np.concatenate([np.log1p(spectrum), *colour], 1)


def test_synthetic_classes_are_learnable_and_survive_augmentation(tmp_path):
    data = load_cifar100(synth(tmp_path, "binary", train=40, test=20, seed=5))
    train = _features(data.x_train)
    mean, std = train.mean(0), train.std(0) + 1e-6

    def design(f):
        return np.c_[(f - mean) / std, np.ones(len(f))]

    a = design(train)
    weights = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ np.eye(25)[data.y_train])

    def accuracy(x):
        return float((np.argmax(design(_features(x)) @ weights, 1) == data.y_test).mean())

    assert accuracy(data.x_test) > 0.6  # chance is 0.04
    flipped_shifted = np.roll(data.x_test[:, :, ::-1], (3, -3), axis=(1, 2))
    assert accuracy(flipped_shifted) > 0.5
    assert accuracy(np.rot90(data.x_test, 1, axes=(1, 2))) < accuracy(data.x_test)  # not trivial


def test_bad_synthetic_arguments(tmp_path):
    from cvtrain.errors import UsageError

    with pytest.raises(UsageError):
        write_synthetic_cifar100(tmp_path, classes=101)
    with pytest.raises(UsageError):
        write_synthetic_cifar100(tmp_path, fmt="png")
    with pytest.raises(UsageError):
        load_cifar100(tmp_path, num_classes=0)
    with pytest.raises(UsageError):
        load_cifar100(tmp_path, edition="both")


def test_module_does_not_import_tensorflow():
    import subprocess

    code = (
        "import sys, cvtrain.data.cifar; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"
