# ruff: noqa: F811 - pytest fixtures imported from s3_server are used as arguments
"""Storage against a real S3 endpoint (moto's server on 127.0.0.1, over HTTP): push/pull,
incremental re-sync, multipart, > 1,000 keys, credentials errors, hostile keys, localize,
run uploads."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, fake_run, run_cli
from s3_server import (  # noqa: F401 - fixtures
    isolate_aws_env,
    make_client,
    s3,
    s3_server,
    start_server_process,
    stop_server_process,
)

from cvtrain import storage
from cvtrain.runs import MANIFEST, RunFolder, verify
from cvtrain.storage import transfer


def test_help_and_local_results_do_not_import_boto3_or_obstore(tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cvtrain.cli import app\n"
        "r = CliRunner()\n"
        "for args in (['--help'], ['data', '--help'], ['data', 'push', '--help'],"
        " ['data', 'pull', '--help'], ['results', '--help'], ['results', 'ls', '--help'],"
        " ['results', 'show', '--help'], ['results', 'fetch', '--help'],"
        " ['results', 'compare', '--help'], ['results', 'ls', sys.argv[1]]):\n"
        "    res = r.invoke(app, args)\n"
        "    assert res.exit_code == 0, (args, res.output)\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'matplotlib', 'boto3', 'botocore',"
        " 'obstore')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _counts(stats):
    """(files sent, files skipped, bytes sent, bytes skipped) of a SyncStats."""
    return stats.sent, stats.skipped, stats.bytes_sent, stats.bytes_skipped


def _summary(sent, skipped, bytes_sent, bytes_skipped):
    """The start of the CLI's line for a copy with these exact numbers."""
    return (f"{sent} files sent ({storage.human_bytes(bytes_sent)}), {skipped} unchanged "
            f"skipped ({storage.human_bytes(bytes_skipped)})")


@pytest.mark.slow
def test_push_pull_round_trip_incremental_multipart_and_pagination(s3, tmp_path):
    src = tmp_path / "src"
    (src / "many").mkdir(parents=True)
    for i in range(1100):  # more than one listing page
        (src / "many" / f"f{i:04d}.txt").write_bytes(f"file {i}\n".encode())
    (src / "deep" / "er").mkdir(parents=True)
    (src / "deep" / "er" / "x.json").write_text('{"a": 1}')
    big = src / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # > 8 MB: two parts
    uri = s3.uri("data", "set")
    total = sum(len(b) for b in _tree(src).values())

    first = run_cli("data", "push", src, uri)
    assert first.returncode == 0, first.stderr
    assert _summary(1102, 0, total, 0) in first.stdout
    etag = s3.client.head_object(Bucket=s3.bucket, Key="data/set/big.bin")["ETag"].strip('"')
    assert etag.endswith("-2")
    assert storage.etag_matches(big, etag)
    keys = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="data/set/")
    assert keys["IsTruncated"]  # the listing really paginates

    again = run_cli("data", "push", src, uri)
    assert again.returncode == 0, again.stderr
    assert _summary(0, 1102, 0, total) in again.stdout

    dest = tmp_path / "dest"
    pulled = run_cli("data", "pull", uri, dest)
    assert pulled.returncode == 0, pulled.stderr
    assert _summary(1102, 0, total, 0) in pulled.stdout
    assert _tree(dest) == _tree(src)
    assert not list(dest.rglob("*.cvtrain-part"))

    # same size, different content: re-sent both ways, nothing else
    (src / "many" / "f0007.txt").write_bytes(b"FILE 7\n")
    changed = storage.push(src, uri)
    assert _counts(changed) == (1, 1101, 7, total - 7)
    assert changed.sent_names == ["many/f0007.txt"]
    back = storage.pull(uri, dest)
    assert _counts(back) == (1, 1101, 7, total - 7)
    assert back.sent_names == ["many/f0007.txt"]
    assert _tree(dest) == _tree(src)


@pytest.mark.slow
def test_single_files_keys_and_local_copies(s3, tmp_path):
    f = tmp_path / "archive.tar.gz"
    f.write_bytes(b"abc" * 1000)
    one = (1, 0, 3000, 0)  # one new file of 3,000 bytes sent, nothing skipped
    renamed = storage.push(f, s3.uri("one", "renamed.tgz"))
    assert renamed.destination == s3.uri("one", "renamed.tgz") and _counts(renamed) == one
    into = storage.push(f, s3.uri("into") + "/")
    assert into.destination == s3.uri("into", "archive.tar.gz") and _counts(into) == one
    out = storage.pull(s3.uri("one", "renamed.tgz"), tmp_path / "got.tgz")
    assert (tmp_path / "got.tgz").read_bytes() == f.read_bytes() and _counts(out) == one
    (tmp_path / "folder").mkdir()
    out = storage.pull(s3.uri("into", "archive.tar.gz"), tmp_path / "folder")
    assert (tmp_path / "folder" / "archive.tar.gz").read_bytes() == f.read_bytes()
    assert _counts(out) == one
    # local to local: size + checksum
    copy = storage.sync(tmp_path / "folder", tmp_path / "copy")
    assert _counts(copy) == one and copy.sent_names == ["archive.tar.gz"]
    assert _counts(storage.sync(tmp_path / "folder", tmp_path / "copy")) == (0, 1, 0, 3000)

    missing = run_cli("data", "pull", s3.uri("no", "such", "thing"), tmp_path / "x")
    assert missing.returncode == 4
    assert missing.stderr.strip() == (f"cvtrain: error: {s3.uri('no', 'such', 'thing')}: "
                                      "no such key or prefix")
    nobucket = run_cli("data", "push", f, "s3://no-such-bucket-cvtrain/x")
    assert nobucket.returncode == 4 and "no such bucket" in nobucket.stderr
    assert len(nobucket.stderr.strip().splitlines()) == 1
    nolocal = run_cli("data", "push", tmp_path / "nope", s3.uri("x"))
    assert nolocal.returncode == 2 and "no such file or folder" in nolocal.stderr


@pytest.fixture
def auth_server(monkeypatch, tmp_path):
    """A separate moto server that enforces SigV4 and IAM: one user with a real key pair."""
    proc, url = start_server_process({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        import boto3

        iam = boto3.client("iam", endpoint_url=url, aws_access_key_id="testing",
                           aws_secret_access_key="testing", region_name="us-east-1")
        iam.create_user(UserName="trainer")
        key = iam.create_access_key(UserName="trainer")["AccessKey"]
        iam.put_user_policy(UserName="trainer", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        make_client(url).create_bucket(Bucket="secured")  # the last unauthenticated call
        yield url, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        stop_server_process(proc)


@pytest.mark.slow
def test_wrong_credentials_give_one_clear_line(auth_server, monkeypatch, tmp_path):
    url, key_id, secret = auth_server
    src = tmp_path / "f.txt"
    src.write_text("hello")
    isolate_aws_env(monkeypatch, tmp_path, url, key_id, secret)
    ok = run_cli("data", "push", src, "s3://secured/f.txt")
    assert ok.returncode == 0, ok.stderr

    for bad_key, bad_secret, code in ((key_id, "not-the-secret", "SignatureDoesNotMatch"),
                                      ("AKIANOSUCHKEY0000000", "whatever", "InvalidAccessKeyId")):
        isolate_aws_env(monkeypatch, tmp_path, url, bad_key, bad_secret)
        for args in (("data", "push", src, "s3://secured/g.txt"),
                     ("data", "pull", "s3://secured/f.txt", tmp_path / "out.txt"),
                     ("results", "ls", "s3://secured/runs")):
            res = run_cli(*args)
            assert res.returncode == 4, (args, res.stderr)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
            assert lines[0].startswith("cvtrain: error: s3://secured/")
            assert lines[0].endswith(f": access denied with the configured credentials ({code})")
            assert bad_secret not in res.stderr + res.stdout
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("key", ["p/../../escaped.txt", "p//etc/passwd", "p/a/../../../x",
                                 "p/./dot"])
def test_hostile_keys_are_refused(s3, tmp_path, key):
    s3.client.put_object(Bucket=s3.bucket, Key="p/fine.txt", Body=b"fine")
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"evil")
    dest = tmp_path / "box" / "dest"
    dest.parent.mkdir()
    before = set(tmp_path.rglob("*"))
    res = run_cli("data", "pull", s3.uri("p"), dest)
    assert res.returncode == 4
    line = res.stderr.strip()
    assert line.startswith("cvtrain: error: ") and len(line.splitlines()) == 1
    assert repr(key[2:]) in line and "refusing unsafe key" in line
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere, not even fine.txt
    assert not any(p.name == "passwd" or p.name == "escaped.txt" for p in tmp_path.rglob("*"))


def test_localize_pulls_into_the_cache_once(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "cache"))
    archive = os.urandom(300_000)
    s3.client.put_object(Bucket=s3.bucket, Key="datasets/cifar-100-binary.tar.gz", Body=archive)
    for name in ("a.bin", "sub/b.bin"):
        s3.client.put_object(Bucket=s3.bucket, Key=f"datasets/folder/{name}", Body=name.encode())
    copies = []
    real_copy = transfer._copy
    monkeypatch.setattr(transfer, "_copy", lambda *a: copies.append(a[0].name) or real_copy(*a))

    local = tmp_path / "here.tar.gz"
    assert storage.localize(str(local)) == local  # local paths unchanged, nothing copied

    uri = s3.uri("datasets", "cifar-100-binary.tar.gz")
    path = storage.localize(uri)
    assert path == tmp_path / "cache" / "s3" / s3.bucket / "datasets" / "cifar-100-binary.tar.gz"
    assert path.read_bytes() == archive and copies == ["cifar-100-binary.tar.gz"]
    assert storage.localize(uri) == path and len(copies) == 1  # second call: nothing moved

    folder = storage.localize(s3.uri("datasets", "folder") + "/")
    assert folder == tmp_path / "cache" / "s3" / s3.bucket / "datasets" / "folder"
    assert (folder / "sub" / "b.bin").read_bytes() == b"sub/b.bin"
    assert storage.localize(s3.uri("datasets", "folder")) == folder and len(copies) == 3


def _unfinished_run(root):
    return fake_run(root, spec="name: basenet\n", history="epoch,loss\n1,2.0\n",
                    files={"tensorboard/train/events": b"\0" * 100}, complete=False)


@pytest.mark.parametrize("where", ["s3", "local"])
def test_run_uploader_sends_changes_and_the_manifest_last(s3, tmp_path, where):
    run = _unfinished_run(tmp_path / "out")
    results = s3.uri("results") if where == "s3" else str(tmp_path / "results")

    def remote_files():
        if where == "s3":
            listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="results/basenet/r1/")
            return {o["Key"].split("/r1/", 1)[1] for o in listing.get("Contents", [])}
        base = tmp_path / "results" / "basenet" / "r1"
        return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}

    up = storage.RunUploader(run, results)
    first = up.sync()
    assert _counts(first) == (3, 0, 14 + 17 + 100, 0)  # spec.yaml, history.csv, events
    assert MANIFEST not in remote_files()
    assert remote_files() == {"spec.yaml", "history.csv", "tensorboard/train/events"}
    assert _counts(up.sync()) == (0, 0, 0, 0)  # nothing changed: nothing sent, nothing compared
    with open(run.file("history.csv"), "a") as fh:
        fh.write("2,1.5\n")
    run.file("model.keras").write_bytes(b"model")
    second = up.sync()
    assert sorted(second.sent_names) == ["history.csv", "model.keras"]
    assert _counts(second) == (2, 0, 23 + 5, 0)
    assert MANIFEST not in remote_files()

    run.file("metrics.json").write_text("{}")
    run.finalize()
    done = up.finish()
    assert up.order[-1] == MANIFEST and up.order.count(MANIFEST) == 1
    assert done.sent_names == ["metrics.json", MANIFEST]
    assert _counts(done) == (2, 0, 2 + run.file(MANIFEST).stat().st_size, 0)
    assert remote_files() == {"spec.yaml", "history.csv", "tensorboard/train/events",
                              "model.keras", "metrics.json", MANIFEST}

    back = tmp_path / "back" / "basenet" / "r1"
    assert storage.download_run(RunFolder(results, "basenet", "r1"), back)
    assert verify(back) == []
    assert not storage.download_run(RunFolder(results, "basenet", "nope"), tmp_path / "none")
    # a complete run with this id is seen as such (the run reuses it, never overwrites it)
    again = storage.RunUploader(run, results)
    assert again.remote_complete()
    assert again.remote_manifest() == run.file(MANIFEST).read_bytes()


def test_run_uploader_resumes_and_drops_stale_remote_files(s3, tmp_path):
    run = _unfinished_run(tmp_path / "out")
    results = s3.uri("res")
    up = storage.RunUploader(run, results)
    run.file("stale.ckpt").write_bytes(b"old")
    assert _counts(up.sync()) == (4, 0, 14 + 17 + 100 + 3, 0)

    def keys():
        listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="res/")
        return {o["Key"].removeprefix("res/basenet/r1/") for o in listing["Contents"]}

    kept = {"spec.yaml", "history.csv", "tensorboard/train/events"}
    assert keys() == kept | {"stale.ckpt"}
    # interrupted: a new process pulls the incomplete run and carries on
    resumed = tmp_path / "resumed" / "basenet" / "r1"
    assert storage.download_run(RunFolder(results, "basenet", "r1"), resumed)
    assert set(_tree(resumed)) == kept | {"stale.ckpt"}
    (resumed / "stale.ckpt").unlink()
    up2 = storage.RunUploader(RunFolder.at(resumed), results)
    # identical files already there: all three skipped by checksum, nothing sent
    assert _counts(up2.sync()) == (0, 3, 0, 14 + 17 + 100)
    RunFolder.at(resumed).finalize()
    done = up2.finish()
    assert done.sent_names == [MANIFEST]
    assert _counts(done) == (1, 0, (resumed / MANIFEST).stat().st_size, 0)
    assert keys() == kept | {MANIFEST}  # exactly one file deleted: the stale checkpoint
