"""Birds feature extraction shared on AWS Batch: head jobs of a set with the same backbone
features wait for one features job, which shares the features in the results root; each
head fetches them (checked against their manifest) instead of running the backbone, and
extracts its own when they are missing or damaged.

Pure: which jobs share, how the set splits. Against moto's S3 server: the shared store
and the Batch entry run in-process. Against moto's Batch (tests/test_batch.py's server):
the submitted jobs, their dependency and environment, ``cvtrain status``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import JOBS, run_cli
from rich.console import Console
from s3_server import s3, s3_server  # noqa: F401  (fixtures)
from test_batch import BUCKET, QUEUE, REPO_URI, TAG, batch_client, cloud, moto_url  # noqa: F401

from cvtrain.cloud import definitions as defs
from cvtrain.cloud.batch import BatchRunner
from cvtrain.cloud.setparts import FEATURES, HEADS, feature_groups, split_set
from cvtrain.cloud.setparts import JOBS as REST
from cvtrain.console import RunLog
from cvtrain.data.birds import load_cub200, write_synthetic_cub200
from cvtrain.data.birds import shared as sharing
from cvtrain.data.birds.features import feature_key, load_or_extract
from cvtrain.spec import load_spec

HEADS_JOBS = ["resnet50_features_dense", "resnet50_features_mlp", "resnet50_maps_convhead"]
BIRDS_S3 = "s3://example-bucket/datasets/CUB_200_2010.tgz"
CIFAR_S3 = "s3://example-bucket/datasets/cifar-100-binary.tar.gz"
# 128 px: 4x4 backbone maps, the smallest head B fits; random weights need a seed to repeat
SMALL = ["model.weights=none", "data.image_size=128", "training.epochs=1"]


def spec(job: str, *sets: str, seed: int | None = None):
    folder = "birds" if job.startswith("resnet50") else "cifar"
    return load_spec(JOBS / folder / f"{job}.yaml", list(sets), seed=seed)


def quiet_log():
    out = io.StringIO()
    return RunLog(Console(file=out, width=200)), out


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("CVTRAIN_CACHE", str(path))
    return path


# ---------------------------------------------------------------------------- which jobs share


def test_heads_on_the_same_data_share_and_others_do_not():
    data = f"data.path={BIRDS_S3}"
    specs = [spec("basenet", f"data.path={CIFAR_S3}"), spec("resnet50_features_dense", data),
             spec("resnet50_features_mlp", data), spec("resnet50_finetune", data),
             spec("resnet50_maps_convhead", data)]
    assert sharing.share_key(specs[0]) is None and sharing.share_key(specs[3]) is None
    assert feature_groups(specs) == [(1, 2, 4)]
    # another image size, other data, random weights without a seed: other features
    assert feature_groups([specs[1], spec("resnet50_features_mlp", data,
                                          "data.image_size=192")]) == []
    assert feature_groups([specs[1], spec("resnet50_features_mlp",
                                          "data.path=s3://other/birds.tgz")]) == []
    unseeded = [spec(j, data, "model.weights=none") for j in HEADS_JOBS[:2]]
    assert feature_groups(unseeded) == []
    seeded = [spec(j, data, "model.weights=none", seed=1) for j in HEADS_JOBS[:2]]
    assert feature_groups(seeded) == [(0, 1)]


def test_a_set_splits_into_features_the_jobs_and_the_heads():
    data = f"data.path={BIRDS_S3}"
    specs = [spec("basenet", f"data.path={CIFAR_S3}"), spec("resnet50_features_dense", data),
             spec("resnet50_features_mlp", data), spec("resnet50_finetune", data),
             spec("resnet50_maps_convhead", data)]
    parts = split_set(specs, "cvtrain-def", QUEUE)
    assert [(p.role, p.indices, p.after) for p in parts] == [
        (FEATURES, (1, 2, 4), None), (REST, (0, 3), None), (HEADS, (1, 2, 4), 0)]
    features, rest, heads = (p.submit_job for p in parts)
    env = {e["name"]: e["value"] for e in features["containerOverrides"]["environment"]}
    assert env[defs.ENV_TASK] == defs.TASK_FEATURES
    assert load_spec_text(defs.decode_spec(env[defs.ENV_SPEC])).name == "resnet50_features_dense"
    assert features["jobName"] == "cvtrain-features-resnet50_features_dense"
    assert "arrayProperties" not in features and "dependsOn" not in heads  # added at submit
    assert heads["arrayProperties"] == {"size": 3} and rest["arrayProperties"] == {"size": 2}
    heads_env = {e["name"]: e["value"] for e in heads["containerOverrides"]["environment"]}
    assert [load_spec_text(t).name for t in defs.decode_specs(heads_env[defs.ENV_SPECS])] \
        == HEADS_JOBS
    # one head alone, or no head: nothing to share, the set stays one array job
    assert split_set(specs[:2], "d", QUEUE) == [] and split_set(specs[3:4], "d", QUEUE) == []
    # only heads: no part for the other jobs; a lone other job is a plain job
    assert [p.role for p in split_set(specs[1:3], "d", QUEUE)] == [FEATURES, HEADS]
    lone = split_set(specs[:3], "d", QUEUE)
    assert [p.role for p in lone] == [FEATURES, REST, HEADS] and not lone[1].array
    assert "arrayProperties" not in lone[1].submit_job


def load_spec_text(text: str):
    from cvtrain.spec import spec_from_text

    return spec_from_text(text, "test")


# ---------------------------------------------------------------------------- the shared store


def fake_entry(folder: Path, key: str, seed: int = 0) -> Path:
    """A features cache entry as load_or_extract leaves one, small."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for split, n in (("train", 12), ("test", 8)):
        np.save(folder / f"{split}_pooled.npy", rng.random((n, 2048), dtype=np.float32))
        np.save(folder / f"{split}_maps.npy", rng.random((n, 4, 4, 2048)).astype(np.float16))
    (folder / "meta.json").write_text(json.dumps({"key": key}))
    return folder


@pytest.mark.parametrize("where", ["folder", pytest.param("bucket", marks=pytest.mark.slow)])
def test_publish_then_fetch_checks_every_file(where, tmp_path, request):
    if where == "bucket":
        bucket = request.getfixturevalue("s3")
        shared = sharing.Shared(bucket.uri("runs"))
    else:
        shared = sharing.Shared(str(tmp_path / "results"))
    log, said = quiet_log()
    entry = fake_entry(tmp_path / "here" / "k1", "k1")
    manifest = sharing.publish(entry, "k1", shared, log)
    assert manifest == shared.location("k1", sharing.MANIFEST)
    doc = json.loads(_read(shared, "k1", sharing.MANIFEST))
    assert doc["key"] == "k1" and {f["path"] for f in doc["files"]} == {
        "meta.json", "train_pooled.npy", "test_pooled.npy", "train_maps.npy", "test_maps.npy"}

    dest = tmp_path / "elsewhere" / "k1"
    assert sharing.fetch("k1", dest, shared, log) == manifest
    for f in entry.iterdir():
        assert (dest / f.name).read_bytes() == f.read_bytes()
    assert sharing.fetch("k2", tmp_path / "none" / "k2", shared, log) is None  # none there
    assert not (tmp_path / "none" / "k2").exists()

    # a second writer: its own folder, then the manifest names it; readers see it whole
    other = fake_entry(tmp_path / "there" / "k1", "k1", seed=1)
    sharing.publish(other, "k1", shared, log)
    assert json.loads(_read(shared, "k1", sharing.MANIFEST))["folder"] != doc["folder"]
    again = tmp_path / "again" / "k1"
    assert sharing.fetch("k1", again, shared, log)
    assert (again / "train_maps.npy").read_bytes() == (other / "train_maps.npy").read_bytes()

    # a file that does not match its manifest: not used, said, nothing left in the cache
    folder = json.loads(_read(shared, "k1", sharing.MANIFEST))["folder"]
    _write(shared, "k1", folder, "test_pooled.npy", b"damaged")
    damaged = tmp_path / "damaged" / "k1"
    assert sharing.fetch("k1", damaged, shared, log) is None
    assert not damaged.exists() and not list(damaged.parent.iterdir())
    assert "test_pooled.npy: content differs from manifest; extracting here" in said.getvalue()


def _read(shared, *parts) -> str:
    from cvtrain.results import read_text

    return read_text(shared.location(*parts))


def _write(shared, *parts_and_body) -> None:
    *parts, body = parts_and_body
    location = shared.location(*parts)
    if location.startswith("s3://"):
        from s3_server import make_client

        from cvtrain.storage import S3Uri

        uri = S3Uri.parse(location)
        import os

        make_client(os.environ["AWS_ENDPOINT_URL"]).put_object(Bucket=uri.bucket, Key=uri.key,
                                                               Body=body)
    else:
        Path(location).write_bytes(body)


def test_results_ls_does_not_list_shared_features(tmp_path):
    shared = sharing.Shared(str(tmp_path / "results"))
    sharing.publish(fake_entry(tmp_path / "c" / "k", "k"), "k", shared)
    from cvtrain.results import list_runs

    assert list_runs(str(tmp_path / "results")) == []


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return write_synthetic_cub200(tmp_path_factory.mktemp("birds"), classes=4, per_class=6,
                                  image_size=64, seed=3)


def test_a_head_fetches_shared_features_instead_of_running_the_backbone(birds, tmp_path,
                                                                       cache, monkeypatch):
    import cvtrain.models.resnet as resnet

    head = spec("resnet50_features_mlp", f"data.path={birds}", *SMALL, seed=2)
    data = load_cub200(birds, layout="2010")
    key = feature_key(data.sha256, "2010", "random-init-seed-2", 128, "resnet50")
    shared = sharing.Shared(str(tmp_path / "results"))
    sharing.publish(fake_entry(tmp_path / "elsewhere" / key, key), key, shared)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although the features were shared")

    monkeypatch.setattr(resnet, "build_backbone", no_backbone)
    log, said = quiet_log()
    with sharing.sharing(shared.results):
        got = load_or_extract(data, head.model, 128, "2010", 2, log)
    assert got.shared == shared.location(key, sharing.MANIFEST) and got.key == key
    assert got.train.shape == (12, 2048) and (cache / "features" / key / "meta.json").is_file()
    assert "fetched from" in said.getvalue()
    # without sharing (a local run) nothing is looked up: the local cache now has them
    assert load_or_extract(data, head.model, 128, "2010", 2, log).cache_hit
    # another key is not there: the backbone would have to run
    with sharing.sharing(shared.results), pytest.raises(AssertionError, match="backbone ran"):
        load_or_extract(data, head.model, 128, "2010", 3, log)


# ---------------------------------------------------------------------------- the entry


def _env(results: str, tmp_path: Path, job_id: str, **extra) -> dict:
    return {defs.ENV_RESULTS: results, defs.ENV_RUNS: str(tmp_path / "scratch"),
            defs.ENV_JOB_ID: job_id, **extra}


@pytest.mark.slow
def test_features_job_then_heads_that_fetch_then_one_that_extracts(birds, tmp_path, cache,
                                                                   monkeypatch, s3,  # noqa: F811
                                                                   keras_globals):
    """In-process, against the S3 server: the features job extracts and shares; a head of
    the set (a fresh instance: empty cache) fetches and trains without the backbone; with
    the features gone (the features job failed) a head extracts its own and shares them."""
    import cvtrain.data.birds.features as features_mod

    results = s3.uri("runs")
    specs = [spec(j, f"data.path={birds}", *SMALL, seed=2) for j in HEADS_JOBS]
    features_env = _env(results, tmp_path, "feat-1", **{
        defs.ENV_SPEC: defs.encode_spec(specs[0].to_yaml()),
        defs.ENV_TASK: defs.TASK_FEATURES})
    assert BatchRunner(env=features_env).entry().plan.task == defs.TASK_FEATURES
    proc = run_cli("run-batch", env=features_env)  # the container's command, as on Batch
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"cvtrain run-batch: backbone features for resnet50_features_dense -> " \
           f"{results}/.features/" in proc.stdout
    (manifest,) = [o["Key"] for o in s3.client.list_objects_v2(
        Bucket=s3.bucket, Prefix="runs/.features/")["Contents"] if o["Key"].endswith(".json")
        and o["Key"].count("/") == 3]
    key = manifest.split("/")[2]
    done = {"shared": f"{results}/.features/{key}/features.json"}
    assert f"features {key} extracted and shared: {done['shared']}" in proc.stdout
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=f"runs/.features/{key}/")
    assert len(listed["Contents"]) == 6  # five files and the manifest

    real_extract = features_mod.extract

    def no_extraction(*args, **kwargs):  # (the finish still builds it for classifier.keras)
        raise AssertionError("the backbone ran although the features were shared")

    monkeypatch.setattr(features_mod, "extract", no_extraction)
    heads_env = _env(results, tmp_path, "heads-1", **{
        defs.ENV_SPECS: defs.encode_specs([s.to_yaml() for s in specs]),
        defs.ENV_ARRAY_INDEX: "2"})
    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "instance-2"))
    head = BatchRunner(env=heads_env).entry()
    assert head.spec.name == "resnet50_maps_convhead"  # the maps: the large kind
    assert BatchRunner.run_entry(head).code == 0
    metrics = json.loads(_get(s3, f"runs/{head.spec.name}/heads-1-2/metrics.json"))
    assert metrics["dataset"]["features"]["shared"] == done["shared"]
    assert metrics["dataset"]["features"]["key"] == key

    # the features job failed: no manifest; the head extracts (and shares) its own
    s3.client.delete_object(Bucket=s3.bucket, Key=f"runs/.features/{key}/features.json")
    monkeypatch.setattr(features_mod, "extract", real_extract)
    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "instance-3"))
    first = BatchRunner(env={**heads_env, defs.ENV_ARRAY_INDEX: "0"}).entry()
    assert BatchRunner.run_entry(first).code == 0
    metrics = json.loads(_get(s3, f"runs/{first.spec.name}/heads-1-0/metrics.json"))
    assert metrics["dataset"]["features"]["cache"] == "miss"
    assert metrics["dataset"]["features"]["shared"] == done["shared"]  # shared again


def _get(s3, key: str) -> str:  # noqa: F811
    return s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read().decode()


def test_status_says_what_a_waiting_job_waits_for():
    from cvtrain.cloud.status import status_rows

    rows, _ = status_rows([{"jobName": "heads", "jobId": "h1", "status": "PENDING",
                            "dependsOn": [{"jobId": "f1"}]},
                           {"jobName": "heads", "jobId": "h2", "status": "RUNNING",
                            "dependsOn": [{"jobId": "f1"}]}])
    assert [r.reason for r in rows] == ["waits for f1", ""]


def test_a_features_job_for_a_job_without_features_is_refused(tmp_path):
    from cvtrain.errors import UsageError

    env = _env("s3://b/runs", tmp_path, "f", **{
        defs.ENV_SPEC: defs.encode_spec(spec("basenet", f"data.path={CIFAR_S3}").to_yaml()),
        defs.ENV_TASK: defs.TASK_FEATURES})
    backend = BatchRunner(env=env)
    with pytest.raises(UsageError, match="trains on tiny_images, not backbone features"):
        backend.run_features(backend.entry())
    with pytest.raises(UsageError, match="CVTRAIN_TASK=train: expected features"):
        BatchRunner(env={**env, defs.ENV_TASK: "train"}).entry()


# ---------------------------------------------------------------------------- submitting


def submit_set(*extra):
    return run_cli("submit", JOBS / "cifar" / "basenet.yaml", JOBS / "birds", "--queue", QUEUE,
                   "--image", f"{REPO_URI}:{TAG}", "--results", f"s3://{BUCKET}/runs",
                   "--set", f"cifar100:data.path={CIFAR_S3}",
                   "--set", f"cub200:data.path={BIRDS_S3}", *extra)


@pytest.mark.slow
def test_submit_a_set_with_heads_waits_for_one_features_job(cloud, moto_url):  # noqa: F811
    proc = submit_set("--no-check", "--json")
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    features, rest, heads = done["jobs"]
    assert (features["role"], features["jobs"], features["size"], features["after"]) == (
        "features", HEADS_JOBS, None, None)
    assert (rest["role"], rest["jobs"], rest["size"], rest["after"]) == (
        "jobs", ["basenet", "resnet50_finetune"], 2, None)
    assert (heads["role"], heads["jobs"], heads["size"], heads["after"]) == (
        "heads", HEADS_JOBS, 3, features["job_id"])
    assert done["job_id"] == features["job_id"]
    assert [(r["job"], r["job_id"]) for r in done["runs"]] == [
        ("basenet", f"{rest['job_id']}:0"),
        ("resnet50_features_dense", f"{heads['job_id']}:0"),
        ("resnet50_features_mlp", f"{heads['job_id']}:1"),
        ("resnet50_maps_convhead", f"{heads['job_id']}:2"),  # the folder in steps order
        ("resnet50_finetune", f"{rest['job_id']}:1")]
    assert done["runs"][2]["results"] == \
        f"s3://{BUCKET}/runs/resnet50_features_mlp/{heads['job_id']}-1/"

    b = batch_client(moto_url)
    described = {j["jobId"]: j for j in b.describe_jobs(
        jobs=[features["job_id"], rest["job_id"], heads["job_id"]])["jobs"]}
    assert described[heads["job_id"]]["dependsOn"] == [{"jobId": features["job_id"]}]
    assert not described[rest["job_id"]].get("dependsOn")  # CIFAR, fine-tuning: no wait
    assert not described[features["job_id"]].get("dependsOn")
    env = {e["name"]: e["value"] for e in described[features["job_id"]]["container"]["environment"]}
    assert env[defs.ENV_TASK] == defs.TASK_FEATURES and env[defs.ENV_RESULTS].endswith("/runs")
    job = BatchRunner({**env, defs.ENV_JOB_ID: features["job_id"]}).entry()
    assert job.plan.task == defs.TASK_FEATURES and job.spec.data.path == BIRDS_S3
    # a heads child: its own spec, as any set's child
    heads_env = {e["name"]: e["value"] for e in
                 described[heads["job_id"]]["container"]["environment"]}
    child = BatchRunner({**heads_env, defs.ENV_JOB_ID: heads["job_id"],
                          defs.ENV_ARRAY_INDEX: "1"}).entry()
    assert child.spec.name == "resnet50_features_mlp" and child.plan.task is None

    # status without ids: every Batch job of the set, the features job by name
    status = run_cli("status", "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["job_id"]: r for r in json.loads(status.stdout)}
    assert {features["job_id"], rest["job_id"], heads["job_id"]} <= set(rows)
    assert rows[features["job_id"]]["job"] == "cvtrain-features-resnet50_features_dense"

    # in words, and the plan without submitting
    text = submit_set("--no-check")
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "(backbone features for resnet50_features_dense, resnet50_features_mlp, " \
           "resnet50_maps_convhead)" in out
    assert "(array of 3 jobs; starts after " in out and "(array of 2 jobs)" in out
    assert "resnet50_maps_convhead  -> s3://" in out and "follow them: cvtrain status " in out
    dry = json.loads(submit_set("--dry-run").stdout)
    assert [(p["role"], p["after_part"]) for p in dry["parts"]] == [
        ("features", None), ("jobs", None), ("heads", 0)]
    # resuming the features job makes no sense: refused in one line
    resume = run_cli("submit", "--resume", features["job_id"], "--queue", QUEUE, "--image",
                     f"{REPO_URI}:{TAG}", "--no-check")
    assert resume.returncode == 2 and "a features job leaves no run to continue" in resume.stderr
