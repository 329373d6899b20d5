# ruff: noqa: F811 - pytest fixtures imported from s3_server are used as arguments
"""``cvtrain results`` on a local results folder and on a bucket (moto's server over HTTP),
and ``cvtrain run --results s3://...``."""

import json

import pytest
from conftest import JOBS, run_cli
from s3_server import s3, s3_server  # noqa: F401 - fixtures

from cvtrain import storage
from cvtrain.runs import MANIFEST, verify

pytestmark = pytest.mark.slow  # every test here trains a model

WIDE = {"COLUMNS": "220"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    dest = tmp_path_factory.mktemp("data")
    res = run_cli("data", "synth", "cifar100", dest, "--classes", "5", "--train-per-class", "20",
                  "--test-per-class", "5")
    assert res.returncode == 0, res.stderr
    return dest / "cifar-100-binary.tar.gz"


def _train(archive, *extra):
    return run_cli("run", "basenet", "--set", f"data.path={archive}", "--set",
                   "data.num_classes=5", "--set", "training.epochs=1", "--seed", "0", *extra)


@pytest.fixture(scope="module")
def local_root(archive, tmp_path_factory):
    """A local results root with two complete runs that differ in batch size."""
    root = tmp_path_factory.mktemp("runs")
    for run_id, batch in (("r1", 32), ("r2", 16)):
        res = _train(archive, "--out", root, "--run-id", run_id, "--set",
                     f"training.batch_size={batch}")
        assert res.returncode == 0, res.stderr
    return root


def _check_ls(root, *extra):
    res = run_cli("results", "ls", root, "--json", *extra)
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["job"], r["run_id"]) for r in rows] == [("basenet", "r1"), ("basenet", "r2")]
    for r in rows:
        assert 0 <= r["test_accuracy"] <= 1 and r["epochs_run"] == 1
        assert r["report_accuracy"] == 0.3872
        # synthetic data (the archive's marker): no difference from the report is given
        assert r["synthetic"] is True and r["accuracy_difference"] is None
    table = run_cli("results", "ls", root, env=WIDE)
    assert table.returncode == 0, table.stderr
    assert "r1" in table.stdout and "0.3872" in table.stdout and "complete" in table.stdout
    assert "synthetic" in table.stdout and "+0." not in table.stdout and "-0." not in table.stdout
    return rows


def _check_show_fetch_compare(run1, run2, tmp_path, *extra):
    show = run_cli("results", "show", run1, *extra, env=WIDE)
    assert show.returncode == 0, show.stderr
    for text in ("test accuracy", "0.3872", "metrics.json", "model.keras", MANIFEST,
                 "(synthetic data)"):
        assert text in show.stdout

    fetched = run_cli("results", "fetch", run1, tmp_path / "fetched", *extra)
    assert fetched.returncode == 0, fetched.stderr
    assert "every file matches manifest.json" in fetched.stdout
    assert verify(tmp_path / "fetched" / "basenet" / "r1") == []

    plot = tmp_path / "cmp.png"
    cmp = run_cli("results", "compare", run1, run2, "--plot", plot, *extra, env=WIDE)
    assert cmp.returncode == 0, cmp.stderr
    assert "training.batch_size" in cmp.stdout and "spec differences" in cmp.stdout
    assert "model.name" not in cmp.stdout and "data.num_classes" not in cmp.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_on_a_local_root(local_root, tmp_path):
    _check_ls(local_root)
    _check_show_fetch_compare(local_root / "basenet" / "r1", "basenet/r2", tmp_path,
                              "--root", local_root)
    bad = run_cli("results", "show", "basenet/none", "--root", local_root)
    assert bad.returncode == 4 and "no such run" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_results_on_a_bucket(local_root, s3, tmp_path):
    root = s3.uri("team", "runs")
    files = [p for p in local_root.rglob("*") if p.is_file()]
    # every file of both runs: those their manifests list, and the manifests themselves
    listed = sum(len(json.loads((local_root / "basenet" / r / MANIFEST).read_text())["files"])
                 for r in ("r1", "r2"))
    assert len(files) == listed + 2
    stats = storage.push(local_root, root)
    assert (stats.sent, stats.skipped) == (len(files), 0)
    assert (stats.bytes_sent, stats.bytes_skipped) == (sum(p.stat().st_size for p in files), 0)
    rows = _check_ls(root)
    assert all(r["complete"] for r in rows)
    assert rows[0]["location"] == s3.uri("team", "runs", "basenet", "r1")
    _check_show_fetch_compare(s3.uri("team", "runs", "basenet", "r1"), "basenet/r2", tmp_path,
                              "--root", root)

    # an incomplete run (no manifest) and a damaged one
    s3.client.delete_object(Bucket=s3.bucket, Key="team/runs/basenet/r2/manifest.json")
    rows = json.loads(run_cli("results", "ls", root, "--json", "--job", "basenet").stdout)
    assert [r["complete"] for r in rows] == [True, False]
    s3.client.put_object(Bucket=s3.bucket, Key="team/runs/basenet/r1/spec.yaml", Body=b"x: 1\n")
    bad = run_cli("results", "fetch", s3.uri("team", "runs", "basenet", "r1"), tmp_path / "f2")
    assert bad.returncode == 4
    assert "does not match its manifest.json: spec.yaml" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_run_with_results_uploads_complete_run(archive, s3, tmp_path):
    """`cvtrain run --results s3://...` leaves a complete run in the bucket."""
    res = _train(archive, "--out", tmp_path / "runs", "--run-id", "up1",
                 "--results", s3.uri("runs"))
    assert res.returncode == 0, res.stderr
    listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="runs/basenet/up1/")
    keys = {o["Key"].rsplit("/up1/", 1)[1] for o in listing.get("Contents", [])}
    local = tmp_path / "runs" / "basenet" / "up1"
    # exactly the finished run folder: every file uploaded, the checkpoint's files deleted
    assert keys == {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {MANIFEST, "metrics.json", "spec.yaml", "history.csv", "model.keras"} <= keys
    assert not any(k.startswith("checkpoint/") for k in keys)
    rows = json.loads(run_cli("results", "ls", s3.uri("runs"), "--json").stdout)
    assert [(r["run_id"], r["complete"]) for r in rows] == [("up1", True)]
    fetched = run_cli("results", "fetch", s3.uri("runs", "basenet", "up1"), tmp_path / "f")
    assert fetched.returncode == 0, fetched.stderr
    assert verify(tmp_path / "f" / "basenet" / "up1") == []
    creds = (s3.env["AWS_SECRET_ACCESS_KEY"], s3.env["AWS_ACCESS_KEY_ID"])
    for name in ("spec.yaml", "metrics.json", "log.txt"):
        text = (tmp_path / "f" / "basenet" / "up1" / name).read_text()
        assert not any(f"={c}" in text or f": {c}\n" in text for c in creds)


def test_report_puts_the_latest_complete_run_of_each_job_beside_the_report(local_root, s3,
                                                                            tmp_path):
    """`results report`: every job of the jobs folder is a row (those without a complete
    run marked missing), each with the latest complete run and the report's numbers;
    report.md, report.json and both plots written; the same from a bucket."""
    from cvtrain.spec.catalog import job_files

    out = tmp_path / "report"
    done = run_cli("results", "report", local_root, "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert json.loads((out / "report.json").read_text()) == report
    rows = {r["job"]: r for r in report["rows"]}
    assert len(rows) == len(job_files())  # every experiment, run or not
    base = rows["basenet"]
    metrics = json.loads((local_root / "basenet" / "r2" / "metrics.json").read_text())
    assert base["status"] == "complete" and base["run_id"] == "r2"  # the latest
    assert base["test_accuracy"] == metrics["test_accuracy"]
    assert base["report_accuracy"] == metrics["report"]["test_accuracy"]
    assert base["synthetic"] is True and base["accuracy_difference"] is None  # no result
    assert base["dataset_sha256"] == metrics["dataset"]["sha256"] and base["seed"] == 0
    assert rows["dropout"]["status"] == "missing" and rows["dropout"]["report_accuracy"]
    md = (out / "report.md").read_text()
    assert "| basenet |" in md and "`r2`" in md and "| dropout |" in md and "missing" in md
    assert "1 of" in md and "## Provenance" in md
    assert "**Synthetic data**" in md and "*synthetic*" in md
    for png in ("accuracy.png", "curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = run_cli("results", "report", local_root, "--out", tmp_path / "again")
    assert table.returncode == 0 and "basenet" in table.stdout and "r2" in table.stdout

    root = s3.uri("reported", "runs")
    storage.push(local_root, root)
    from_bucket = run_cli("results", "report", root, "--out", tmp_path / "b", "--json")
    assert from_bucket.returncode == 0, from_bucket.stderr
    assert {r["job"]: r["run_id"] for r in json.loads(from_bucket.stdout)["rows"]
            if r["status"] == "complete"} == {"basenet": "r2"}
    assert (tmp_path / "b" / "curves.png").is_file()


def test_a_seeded_run_is_never_computed_twice(archive, tmp_path):
    """The same job, data, seed and cvtrain version under one --out: the complete run is
    reused (nothing trained, no new folder); --force trains; a changed --set trains; an
    unseeded run always trains. The fingerprint is in metrics.json and results ls --json."""
    out = tmp_path / "runs"

    def folders():
        return sorted(p.name for p in (out / "basenet").iterdir())

    first = _train(archive, "--out", out)
    assert first.returncode == 0, first.stderr
    (run_id,) = folders()
    fingerprint = json.loads((out / "basenet" / run_id / "metrics.json").read_text())[
        "fingerprint"]
    assert len(fingerprint) == 64

    again = _train(archive, "--out", out)
    assert again.returncode == 0, again.stderr
    assert f"reused: basenet / {run_id} is a complete run with the same fingerprint" in \
        " ".join(again.stdout.split())
    assert folders() == [run_id]

    forced = _train(archive, "--out", out, "--force")
    assert forced.returncode == 0 and len(folders()) == 2
    changed = _train(archive, "--out", out, "--set", "training.batch_size=16")
    assert changed.returncode == 0 and len(folders()) == 3
    unseeded = run_cli("run", "basenet", "--set", f"data.path={archive}", "--set",
                       "data.num_classes=5", "--set", "training.epochs=1", "--out", out)
    assert unseeded.returncode == 0 and len(folders()) == 4
    rows = json.loads(run_cli("results", "ls", out, "--json").stdout)
    assert sum(r["fingerprint"] == fingerprint for r in rows) == 2  # the first and --force


def test_a_set_of_jobs_runs_in_order_and_a_failure_does_not_stop_it(archive, tmp_path):
    """`cvtrain run JOB JOB FOLDER`: each job in turn with a line as it starts and ends, a
    failing one reported while the rest go on, a table at the end, the first failure's exit
    code; DATASET:KEY=VALUE applies to that dataset's jobs only, and one no job can take is
    refused before anything trains."""
    import shutil

    from conftest import JOBS

    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("basenet.yaml", "normalize.yaml"):  # normalize extends basenet
        shutil.copy(JOBS / "cifar" / name, folder / name)
    (folder / "zz_broken.yaml").write_text(  # fails when it starts: no 4 devices here
        "extends: basenet.yaml\ntraining:\n  devices: 4\n")
    out = tmp_path / "runs"
    done = run_cli("run", folder, "--set", f"data.path={archive}",
                   "--set", "cifar100:data.num_classes=5", "--set", "training.epochs=1",
                   "--seed", "0", "--out", out)
    assert done.returncode == 2, done.stderr  # the broken job's exit code
    text = " ".join(done.stdout.split())
    assert "== [1/3] basenet" in text and "== [3/3] zz_broken" in text
    assert "== zz_broken: failed: training.devices: 4, but" in text
    assert "WARNING" not in done.stderr  # several models in one process: no retracing noise
    assert "3 jobs in" in text and "1 of 3 jobs failed" in done.stderr
    for job in ("basenet", "normalize"):
        (run_dir,) = (out / job).iterdir()
        assert verify(run_dir) == []
        assert run_dir.name in done.stdout  # the run id in the final table

    refused = run_cli("run", "basenet", "--set", "cub200:data.path=/x.tgz", "--out", out)
    assert refused.returncode == 2
    assert "no job of this run reads dataset cub200" in refused.stderr
    many = run_cli("run", "basenet", "normalize", "--run-id", "x", "--out", out)
    assert many.returncode == 2 and "one run id cannot name the runs of 2 jobs" in many.stderr


def test_a_weights_file_counts_in_the_fingerprint_by_its_content(tmp_path):
    """Weights given as a file: the same content anywhere gives the same fingerprint, other
    content another (a retrained backbone at the same path is not reused)."""
    from cvtrain.spec import load_spec
    from cvtrain.training.identity import fingerprint

    a, b = tmp_path / "a.weights.h5", tmp_path / "elsewhere" / "b.weights.h5"
    b.parent.mkdir()
    a.write_bytes(b"backbone one")
    b.write_bytes(b"backbone one")
    job = JOBS / "birds" / "resnet50_finetune.yaml"

    def print_(weights):
        return fingerprint(load_spec(job, [f"model.weights={weights}"], seed=0), "d" * 64)

    assert print_(a) == print_(b)
    first = print_(a)
    a.write_bytes(b"backbone two")
    assert print_(a) != first
    assert print_("none") != print_("imagenet")


@pytest.mark.slow
def test_a_seeded_run_in_the_results_root_is_reused(archive, s3, tmp_path):
    """Another machine (an empty --out) with the same --results: the complete run with the
    same fingerprint in the bucket is fetched and reused, nothing trains, nothing new is
    uploaded."""
    root = s3.uri("team", "runs")
    first = _train(archive, "--out", tmp_path / "a", "--results", root)
    assert first.returncode == 0, first.stderr
    (run_id,) = [p.name for p in (tmp_path / "a" / "basenet").iterdir()]
    again = _train(archive, "--out", tmp_path / "b", "--results", root)
    assert again.returncode == 0, again.stderr
    assert f"reused: basenet / {run_id} in {root}" in " ".join(again.stdout.split())
    assert "epoch 1/1" not in again.stdout
    assert verify(tmp_path / "b" / "basenet" / run_id) == []
    rows = json.loads(run_cli("results", "ls", root, "--json").stdout)
    assert [r["run_id"] for r in rows] == [run_id]
