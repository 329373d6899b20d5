# ruff: noqa: F811 - pytest fixtures imported from s3_server are used as arguments
"""Transfers through a faulty network: boto3 talks HTTP to moto's server (its own process)
through ``fault_proxy.FaultProxy``, which fails requests with 500s, 503s, dropped
connections and bodies cut halfway. Every transfer must come out byte-identical, or stop
with one line after a bounded time; a rerun sends only what is missing."""

import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest
from conftest import ROOT
from fault_proxy import FAULTS, FaultProxy
from s3_server import isolate_aws_env, make_client, start_server_process, stop_server_process

from cvtrain import stop, storage
from cvtrain.errors import StorageError
from cvtrain.storage import objects, retries, transfer
from cvtrain.storage import s3 as s3mod
from cvtrain.storage.plan import Ref, plan

MiB = 1024 * 1024
FAILED_LINE = re.compile(r"^(?P<label>\S+): (?P<failed>\d+) of (?P<total>\d+) files failed after "
                         r"retries \(first: .+\); rerun to continue - files already copied are "
                         r"skipped$")


@pytest.fixture(scope="module")
def upstream():
    proc, url = start_server_process()
    yield url
    stop_server_process(proc)


@pytest.fixture(scope="module")
def proxy(upstream):
    with FaultProxy(upstream) as p:
        yield p


@dataclass
class Faulty:
    proxy: FaultProxy
    bucket: str
    client: object  # straight to the server, no faults

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def keys(self, prefix: str) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=prefix)
        return {o["Key"] for page in pages for o in page.get("Contents", ())}


@pytest.fixture
def faulty(upstream, proxy, monkeypatch, tmp_path):
    """A fresh bucket; boto3 and obstore (in-process and in CLI subprocesses) pointed at the
    proxy, which starts fault-free; backoff waits shortened (the bounds stay as shipped)."""
    isolate_aws_env(monkeypatch, tmp_path, proxy.url)
    monkeypatch.setattr(retries, "BACKOFF_BASE", 0.02)
    monkeypatch.setattr(retries, "BACKOFF_CAP", 0.5)
    monkeypatch.setattr(retries, "REQUEST_BACKOFF", 0.01)
    client = make_client(upstream)
    bucket = f"faults-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    proxy.configure(rate=0.0, faults=FAULTS, latency_ms=0, seed=0, scope="all")
    proxy.reset_counts()
    yield Faulty(proxy, bucket, client)
    proxy.configure(rate=0.0)
    stop.reset()


def _write_tree(root, files=500, big=12 * MiB + 3, max_size=8192, seed=0):
    """``files`` small files in ten folders (random content and sizes, some empty), plus
    one file over the multipart threshold when ``big``."""
    rng = random.Random(seed)
    for i in range(files):
        path = root / f"class{i % 10}" / f"img{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(0, max_size)))
    if big:
        (root / "big.bin").write_bytes(rng.randbytes(big))
    return root


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _round_trip(faulty, tmp_path, seed):
    src = _write_tree(tmp_path / "src", seed=seed)
    n = len(_tree(src))
    faulty.proxy.configure(rate=0.2, seed=seed)
    pushed = storage.push(src, faulty.uri("ds"))
    assert pushed.sent == n and pushed.skipped == 0
    assert faulty.keys("ds/") == {f"ds/{rel}" for rel in _tree(src)}
    pulled = storage.pull(faulty.uri("ds"), tmp_path / "back")
    assert pulled.sent == n
    assert _tree(tmp_path / "back") == _tree(src)
    assert not list((tmp_path / "back").rglob("*.cvtrain-part*"))
    assert set(faulty.proxy.injected) == set(FAULTS)  # every kind of fault was met


@pytest.mark.slow  # 15 s: the full tier; the quick one has the single-fault-kind tests
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_push_and_pull_through_20_percent_faults(faulty, tmp_path, seed):
    _round_trip(faulty, tmp_path, seed)


@pytest.mark.slow  # 5-7 s a seed here: the full tier
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_small_file_arrives_through_20_percent_errors_and_drops(faulty, tmp_path, seed):
    """500 small files pushed and pulled while a fifth of all requests (listings included)
    fail with a 500, a 503 (SlowDown) or a dropped connection: every file arrives, and the
    server saw one request per file plus one per fault that a request for a file met. No
    failure but the injected ones (a pooled connection gone bad, say), no request sent
    again after it succeeded, none sent twice for one attempt."""
    src = _write_tree(tmp_path / "src", files=500, big=0, seed=seed)
    names = set(_tree(src))
    faulty.proxy.configure(rate=0.2, faults=["500", "503", "drop"], seed=seed)
    pushed = storage.push(src, faulty.uri("ds"))
    assert pushed.sent == 500 and faulty.keys("ds/") == {f"ds/{n}" for n in names}
    assert faulty.proxy.keyed["PUT"] == 500 + faulty.proxy.keyed_faults
    faulty.proxy.reset_counts()
    pulled = storage.pull(faulty.uri("ds"), tmp_path / "back")
    assert pulled.sent == 500 and _tree(tmp_path / "back") == _tree(src)
    assert faulty.proxy.keyed["GET"] == 500 + faulty.proxy.keyed_faults
    assert set(faulty.proxy.injected) == {"500", "503", "drop"}


def test_an_upload_whose_etag_is_not_its_md5_is_sent_again_with_content_md5(faulty, tmp_path):
    """Every PUT answered with an ETag that is not the MD5 of the body (the proxy rewrites
    it): each upload is sent again through boto3 with Content-MD5, and obstore is switched
    off for the bucket; the objects are whole."""
    src = _write_tree(tmp_path / "src", files=6, big=0, seed=14)
    client = s3mod.client()
    md5s = []

    def seen(params, **kwargs):
        md5s.append(params["headers"].get("Content-MD5"))

    client.meta.events.register("before-call.s3.PutObject", seen)
    faulty.proxy.configure(rate=1.0, faults=["etag"], scope="objects")
    try:
        assert storage.push(src, faulty.uri("md5")).sent == 6
    finally:
        client.meta.events.unregister("before-call.s3.PutObject", seen)
    assert len(md5s) == 6 and all(md5s)
    assert s3mod.remote().stores[faulty.bucket] is None
    for rel, body in _tree(src).items():
        got = faulty.client.get_object(Bucket=faulty.bucket, Key=f"md5/{rel}")["Body"].read()
        assert got == body, rel


@pytest.mark.slow  # 8-10 s here, most of it writing 1,100 keys
def test_a_listing_that_breaks_off_goes_on_after_the_last_key(faulty, monkeypatch):
    """A folder of 1,100 keys (two pages) listed while half of all requests fail and
    neither library retries by itself: every key once, in order, and each page answered
    once: a failure after the first page goes on from its last key, never from the start."""
    from concurrent.futures import ThreadPoolExecutor

    _only_our_retries(monkeypatch)
    keys = [f"l/{i:05d}" for i in range(1100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: faulty.client.put_object(Bucket=faulty.bucket, Key=k,
                                                         Body=b"x"), keys))
    faulty.proxy.configure(rate=0.5, faults=["500", "503", "drop"], seed=15)
    listed = s3mod.list_objects(s3mod.S3Uri(faulty.bucket, "l/"))
    assert [o.key for o in listed] == keys
    listings = faulty.proxy.counts["GET"] - faulty.proxy.keyed["GET"]
    assert listings == 2 + sum(faulty.proxy.injected.values())
    assert faulty.proxy.started_after > 0  # the second page failed at least once


def test_pull_resumes_bodies_cut_halfway(faulty, tmp_path):
    src = _write_tree(tmp_path / "src", files=40, big=0, max_size=600_000, seed=4)
    storage.push(src, faulty.uri("cut"))
    faulty.proxy.configure(rate=0.3, faults=["cut"], seed=4)
    pulled = storage.pull(faulty.uri("cut"), tmp_path / "back")
    assert pulled.sent == 40 and _tree(tmp_path / "back") == _tree(src)
    assert faulty.proxy.injected["cut"] > 0
    assert faulty.proxy.ranged > 0  # continued from the bytes already written


def test_a_changed_object_restarts_the_download(faulty, tmp_path):
    """Bytes already written belong to another version (ETag): IfMatch fails, the file is
    started again and ends up as the object is now."""
    body = os.urandom(100_000)
    faulty.client.put_object(Bucket=faulty.bucket, Key="obj", Body=body)
    tmp = tmp_path / "obj.part"
    src = Ref(bucket=faulty.bucket, key="obj", size=len(body))
    part = objects._Partial(written=1000, etag='"an-older-version"', size=len(body))
    with open(tmp, "wb") as fh:
        fh.write(b"x" * 1000)
        retries.with_retries(lambda: objects._get_rest(s3mod.remote(), src, fh, part,
                                                      lambda n: None), src.label)
    assert tmp.read_bytes() == body
    assert faulty.proxy.counts["GET"] == 2 and faulty.proxy.ranged == 1


def _only_our_retries(monkeypatch):
    """botocore makes one attempt per request: every retry is the per-object layer's, whose
    waits the tests shorten (botocore's own waits of up to seconds cannot be)."""
    monkeypatch.setattr(retries, "REQUEST_ATTEMPTS", 1)


@pytest.mark.slow
def test_50_percent_faults_finish_or_stop_in_bounded_time(faulty, tmp_path, monkeypatch):
    _only_our_retries(monkeypatch)
    monkeypatch.setattr(retries, "RETRY_ATTEMPTS", 4)
    monkeypatch.setattr(retries, "RETRY_SECONDS", 10.0)
    src = _write_tree(tmp_path / "src", files=150, big=0, seed=5)
    faulty.proxy.configure(rate=0.5, seed=5)
    for step in (lambda: storage.push(src, faulty.uri("half")),
                 lambda: storage.pull(faulty.uri("half"), tmp_path / "back")):
        t0 = time.monotonic()
        try:
            step()
        except StorageError as exc:
            line = str(exc)
            assert "\n" not in line
            assert FAILED_LINE.match(line) or re.match(r"^s3://\S+: .+attempts in \d+ s$", line)
        assert time.monotonic() - t0 < 60


@pytest.mark.slow
def test_rerun_after_failures_sends_only_what_is_missing(faulty, tmp_path, monkeypatch):
    _only_our_retries(monkeypatch)
    monkeypatch.setattr(retries, "RETRY_ATTEMPTS", 1)  # no second chance: some files fail
    src = _write_tree(tmp_path / "src", files=120, big=0, seed=6)
    names = set(_tree(src))
    faulty.proxy.configure(rate=0.5, seed=6, scope="objects")
    with pytest.raises(StorageError) as failed:
        storage.push(src, faulty.uri("rerun"))
    found = FAILED_LINE.match(str(failed.value))
    assert found and found["label"] == faulty.uri("rerun") and found["total"] == "120"
    there = {k.removeprefix("rerun/") for k in faulty.keys("rerun/")}
    assert there < names  # some arrived (also some whose answer was lost), some did not

    faulty.proxy.configure(rate=0.0)
    faulty.proxy.reset_counts()
    again = storage.push(src, faulty.uri("rerun"))
    assert again.sent == len(names - there) and again.skipped == len(there)
    assert faulty.proxy.keyed["PUT"] == len(names - there)  # nothing sent twice

    faulty.proxy.configure(rate=0.5, seed=7, scope="objects")
    with pytest.raises(StorageError, match=FAILED_LINE):
        storage.pull(faulty.uri("rerun"), tmp_path / "back")
    have = set(_tree(tmp_path / "back"))
    assert have < names
    faulty.proxy.configure(rate=0.0)
    faulty.proxy.reset_counts()
    back = storage.pull(faulty.uri("rerun"), tmp_path / "back")
    assert back.sent == len(names - have) and back.skipped == len(have)
    assert faulty.proxy.keyed["GET"] == len(names - have)
    assert _tree(tmp_path / "back") == _tree(src)


@pytest.mark.slow
def test_localize_through_faults(faulty, tmp_path, monkeypatch):
    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "cache"))
    src = _write_tree(tmp_path / "src", files=100, big=0, seed=8)
    archive = os.urandom(3 * MiB)
    faulty.client.put_object(Bucket=faulty.bucket, Key="weights/w.h5", Body=archive)
    storage.push(src, faulty.uri("datasets", "set"))
    faulty.proxy.configure(rate=0.2, seed=8)
    folder = storage.localize(faulty.uri("datasets", "set") + "/")
    assert _tree(folder) == _tree(src)
    assert storage.localize(faulty.uri("weights", "w.h5")).read_bytes() == archive


@pytest.mark.slow
def test_run_uploader_through_faults(faulty, tmp_path):
    from cvtrain.runs import RunFolder, verify

    run = RunFolder(tmp_path / "out", "basenet", "r1").prepare()
    run.file("spec.yaml").write_text("name: basenet\n")
    (run.path / "tensorboard").mkdir()
    for i in range(30):
        run.file(f"tensorboard/events{i}").write_bytes(os.urandom(5000))
    faulty.proxy.configure(rate=0.2, seed=9)
    up = storage.RunUploader(run, faulty.uri("results"))
    up.sync()
    run.finalize()
    up.finish()
    back = tmp_path / "back" / "basenet" / "r1"
    assert storage.download_run(RunFolder(faulty.uri("results"), "basenet", "r1"), back)
    assert verify(back) == []


def test_stop_request_starts_no_new_objects(faulty, tmp_path, monkeypatch):
    src = _write_tree(tmp_path / "src", files=60, big=0, seed=10)
    _, pairs = plan(str(src), faulty.uri("stop"))
    started, done = [], []
    real_one = transfer._one

    def one(pair, *args):
        started.append(pair.name)
        if len(started) == 5:
            stop.request()  # while four objects are in flight (this one included)
        return real_one(pair, *args)

    monkeypatch.setattr(transfer, "_one", one)
    with pytest.raises(stop.StopRequested, match=r"^while copying s3://\S+/stop: \d+ of 60 "
                                                 r"files done$"):
        transfer.execute(pairs, workers=4, on_done=lambda pair, sent: done.append(pair.name),
                         label=faulty.uri("stop"))
    assert 5 <= len(started) <= 5 + 3  # at most the ones already past the check
    there = faulty.keys("stop/")
    assert there == {f"stop/{name}" for name in started} == {f"stop/{name}" for name in done}
    stop.reset()
    faulty.proxy.reset_counts()
    rest = storage.push(src, faulty.uri("stop"))
    assert rest.sent == 60 - len(there) and faulty.proxy.keyed["PUT"] == rest.sent


def test_stop_request_ends_a_backoff_wait(faulty, tmp_path, monkeypatch):
    _only_our_retries(monkeypatch)
    monkeypatch.setattr(retries, "backoff", lambda attempt: 30.0)  # every wait a long one
    src = _write_tree(tmp_path / "src", files=3, big=0, seed=11)
    faulty.proxy.configure(rate=1.0, faults=["drop"], scope="objects")
    timer = threading.Timer(1.0, stop.request)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(stop.StopRequested):
        storage.push(src, faulty.uri("wait"))
    timer.join()
    assert time.monotonic() - t0 < 15  # not 30 s of backoff
    assert faulty.keys("wait/") == set()


@pytest.mark.slow
def test_cli_push_stopped_by_sigterm_keeps_what_was_sent(faulty, tmp_path):
    """SIGTERM during ``cvtrain data push``: the objects in flight finish, no new one starts,
    one line and the "try again" exit code; a rerun sends only the rest."""
    import signal

    from cvtrain.errors import EXIT_TERMINATED

    src = _write_tree(tmp_path / "src", files=300, big=0, seed=13)
    faulty.proxy.configure(latency_ms=100)  # a far endpoint: the push takes seconds
    proc = subprocess.Popen([sys.executable, "-m", "cvtrain", "data", "push", str(src),
                             faulty.uri("term")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while faulty.proxy.keyed["PUT"] < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_TERMINATED, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(rf"while copying {faulty.uri('term')}: \d+ of 300 files done", lines[0])
    there = faulty.keys("term/")
    assert 20 <= len(there) < 300
    faulty.proxy.configure(latency_ms=0)
    faulty.proxy.reset_counts()
    rest = storage.push(src, faulty.uri("term"))
    assert rest.sent == 300 - len(there) == faulty.proxy.keyed["PUT"]


CLI = ("import runpy, sys\n"
       "from cvtrain.storage import retries\n"
       "retries.REQUEST_ATTEMPTS, retries.RETRY_ATTEMPTS = 1, 2  # short bounds\n"
       "retries.BACKOFF_BASE = 0.05\n"
       "sys.argv = ['cvtrain', *sys.argv[1:]]\n"
       "runpy.run_module('cvtrain', run_name='__main__', alter_sys=True)\n")


@pytest.mark.slow
def test_cli_that_cannot_complete_says_so_in_one_line(faulty, tmp_path):
    """``python -m cvtrain data push/pull`` (its retry bounds shortened): exit 4 and one
    line naming the count and the first reason, no traceback; a rerun finishes."""
    src = _write_tree(tmp_path / "src", files=20, big=0, seed=12)
    faulty.proxy.configure(rate=1.0, faults=["503"], scope="objects")

    def cli(*args):
        return subprocess.run([sys.executable, "-c", CLI, "data", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    for args in (("push", src, faulty.uri("cli")), ("pull", faulty.uri("ds"), tmp_path / "b")):
        if args[0] == "pull":
            faulty.proxy.configure(rate=0.0)
            storage.push(src, faulty.uri("ds"))
            faulty.proxy.configure(rate=1.0)
        res = cli(*args)
        assert res.returncode == 4, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        line = lines[0].removeprefix("cvtrain: error: ")
        found = FAILED_LINE.match(line)
        assert found and found["failed"] == found["total"] == "20", line
        assert "SlowDown" in line and "gave up after 2 attempts" in line
    faulty.proxy.configure(rate=0.0)
    res = cli("pull", faulty.uri("ds"), tmp_path / "b")
    assert res.returncode == 0 and "20 files sent" in res.stdout, res.stderr
    assert _tree(tmp_path / "b") == _tree(src)


# --------------------------------------------------------------------------- no network

def _client_error(code, status=400):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def test_transient_and_permanent_errors_are_told_apart():
    import errno

    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import (
        ConnectionClosedError,
        EndpointConnectionError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import ProtocolError

    transient = [_client_error(c, s) for c, s in (("SlowDown", 503), ("InternalError", 500),
                                                  ("RequestTimeout", 400), ("Throttling", 400),
                                                  ("502", 502), ("Mystery", 500))]
    transient += [EndpointConnectionError(endpoint_url="http://x"),
                  ConnectionClosedError(endpoint_url="http://x"),
                  ReadTimeoutError(endpoint_url="http://x"),
                  IncompleteReadError(actual_bytes=1, expected_bytes=2),
                  ResponseStreamingError(error="cut"), ProtocolError("cut"),
                  ConnectionResetError()]
    wrapped = S3UploadFailedError("Failed to upload f to b/k: An error occurred (InternalError)")
    wrapped.__context__ = _client_error("InternalError", 500)  # as boto3 raises it
    transient.append(wrapped)
    permanent = [_client_error(c, s) for c, s in (("AccessDenied", 403), ("NoSuchBucket", 404),
                                                  ("NoSuchKey", 404), ("InvalidAccessKeyId", 403),
                                                  ("SignatureDoesNotMatch", 403))]
    permanent += [OSError(errno.ENOSPC, "No space left on device"), ValueError("bug")]
    assert [e for e in transient if not retries.is_transient(e)] == []
    assert [e for e in permanent if retries.is_transient(e)] == []
    assert retries.is_fatal(_client_error("AccessDenied", 403))
    assert not retries.is_fatal(_client_error("NoSuchKey", 404))


def test_a_dropped_connection_is_not_called_unreachable():
    from botocore.exceptions import ConnectionClosedError, EndpointConnectionError

    dropped = retries.describe(ConnectionClosedError(endpoint_url="http://h:1/b/k"), "s3://b/k")
    assert dropped == "s3://b/k: the connection to http://h:1/b/k was dropped " \
                      "(ConnectionClosedError)"
    assert "cannot reach http://h:1" in retries.describe(
        EndpointConnectionError(endpoint_url="http://h:1"), "s3://b/k")


def test_retries_give_up_within_the_bounds(monkeypatch):
    monkeypatch.setattr(retries, "RETRY_ATTEMPTS", 5)
    monkeypatch.setattr(retries, "BACKOFF_BASE", 0.001)
    calls = []

    def failing():
        calls.append(1)
        raise _client_error("SlowDown", 503)

    with pytest.raises(StorageError, match=r"^s3://b/k: SlowDown: m; gave up after 5 attempts"):
        retries.with_retries(failing, "s3://b/k")
    assert len(calls) == 5
    calls.clear()
    monkeypatch.setattr(retries, "RETRY_SECONDS", 0.0)
    with pytest.raises(StorageError, match="gave up after 1 attempt in"):
        retries.with_retries(failing, "s3://b/k")
    with pytest.raises(type(_client_error("AccessDenied"))):  # permanent: at once, as it is
        retries.with_retries(lambda: (_ for _ in ()).throw(_client_error("AccessDenied", 403)),
                           "s3://b/k")


def test_client_config_has_no_shared_retry_quota(monkeypatch, tmp_path):
    isolate_aws_env(monkeypatch, tmp_path, "http://127.0.0.1:9")
    config = s3mod.client().meta.config
    assert config.retries["mode"] == "legacy"
    assert config.retries["total_max_attempts"] == retries.REQUEST_ATTEMPTS
    if hasattr(config, "request_checksum_calculation"):
        assert config.request_checksum_calculation == "when_required"
        assert config.response_checksum_validation == "when_required"
