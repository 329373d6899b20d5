"""Job specs: every job file validates; bad input gives one precise line; layering works."""

import json

import pytest
from conftest import JOBS, ROOT, run_cli

from cvtrain.spec import SpecError, apply_overrides, load_spec

JOB_FILES = sorted(JOBS.rglob("*.yaml"))
CIFAR_JOBS = ["basenet", "normalize", "augment", "deeper", "batchnorm", "dropout", "earlystop",
              "bonus"]

MINIMAL = """
data: {dataset: cifar100}
model: {name: basenet}
"""


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda p: str(p.relative_to(JOBS)))
def test_every_job_file_validates(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.report.test_accuracy is not None and spec.report.test_loss is not None


def test_all_cifar_experiments_have_a_job():
    assert {p.stem for p in (JOBS / "cifar").glob("*.yaml")} >= set(CIFAR_JOBS)


def test_coursework_defaults_and_steps_accumulate():
    base = load_spec(JOBS / "cifar/basenet.yaml")
    assert (base.training.optimizer.name, base.training.optimizer.learning_rate) == ("sgd", 0.01)
    assert base.training.batch_size == 32 and base.training.epochs == 30
    assert base.data.validation_split == 0.1 and base.data.num_classes == 25
    assert not base.data.normalize and not base.data.augment.enabled
    final = load_spec(JOBS / "cifar/earlystop.yaml")
    assert final.data.normalize and final.data.augment.horizontal_flip
    assert final.data.augment.shift == 0.1 and final.data.augment.zoom == 0.1
    assert final.model.deep and final.model.batch_norm and final.model.dropout > 0
    es = final.training.early_stopping
    assert final.training.epochs == 100 and es.patience == 15 and es.restore_best_weights
    bonus = load_spec(JOBS / "cifar/bonus.yaml")
    assert bonus.model.name == "bonus"
    assert bonus.data.augment.shear > 0 and bonus.data.augment.rotation > 0


def test_extends_and_overrides(write_job):
    write_job("base.yaml", MINIMAL + "training: {epochs: 30}\n")
    child = write_job("sub/child.yaml", "extends: ../base.yaml\nmodel: {deep: true}\n")
    spec = load_spec(child, ["training.epochs=2", "data.augment.shift=0.2",
                             "training.optimizer.learning_rate=1e-3"], seed=7)
    assert spec.name == "child" and spec.model.deep and spec.model.name == "basenet"
    assert spec.training.epochs == 2 and spec.data.augment.shift == 0.2
    assert spec.training.optimizer.learning_rate == 0.001 and spec.seed == 7


def test_child_switching_model_drops_parent_model_options(write_job):
    write_job("base.yaml", MINIMAL.replace("{name: basenet}", "{name: basenet, deep: true}"))
    child = write_job("child.yaml", "extends: base.yaml\nmodel: {name: bonus}\n")
    assert load_spec(child).model.name == "bonus"


def test_override_type_is_yaml():
    doc = apply_overrides({"a": {"b": 1}}, ["a.b=[1, 2]", "a.c=true", "d=null"])
    assert doc == {"a": {"b": [1, 2], "c": True}, "d": None}


@pytest.mark.parametrize("body, overrides, expected", [
    (MINIMAL + "trainig: {epochs: 3}\n", [], "trainig: unknown key; expected one of: data,"),
    (MINIMAL + "training: {epochs: three}\n", [], "training.epochs: expected a valid integer"),
    (MINIMAL, ["training.optimizer.learning_rate=-0.1"],
     "training.optimizer.learning_rate: expected a number greater than 0, got -0.1"),
    (MINIMAL, ["data.validation_split=1.5"], "data.validation_split: expected a number less"),
    (MINIMAL, ["data.validation_split=0"], "data.validation_split: expected a number greater"),
    (MINIMAL, ["model.name=resnet9000"],
     "model.name: unknown model 'resnet9000'; expected one of: basenet, bonus"),
    (MINIMAL, ["data.dataset=mnist"],
     "data.dataset: unknown dataset 'mnist'; expected one of: cifar100, cub200"),
    (MINIMAL, ["model.dropuot=0.5"], "model.dropuot: unknown key; expected one of: batch_norm,"),
    (MINIMAL, ["data.augment.zoom=2"], "data.augment.zoom: expected a number less than 1"),
    (MINIMAL, ["training.checkpoint_minutes=-1"],
     "training.checkpoint_minutes: expected a number of minutes >= 0 (0 or null: only at "
     "the end of each epoch), got -1"),
    (MINIMAL + "training: {checkpoint_minutes: soon}\n", [],
     "training.checkpoint_minutes: expected a number of minutes >= 0"),
    ("data: {dataset: cifar100}\n", [], "model: required key is missing"),
    ("- a\n- b\n", [], "expected a mapping at the top level"),
    ("data: {dataset: [\n", [], "invalid YAML at line"),
    ("extends: nowhere.yaml\n" + MINIMAL, [], "nowhere.yaml: no such job file"),
])
def test_bad_specs_give_one_precise_line(write_job, body, overrides, expected):
    path = write_job("bad.yaml", body)
    with pytest.raises(SpecError) as err:
        load_spec(path, overrides)
    message = str(err.value)
    assert "\n" not in message
    if overrides:  # a mistake of --set is blamed on it, with the key it set
        key, problem = expected.split(": ", 1)
        assert message.startswith(f"--set {overrides[0]}: {problem}")
        assert overrides[0].startswith(f"{key}=") and message.endswith(f"(job: {path})")
        return
    assert expected in message
    if "nowhere" not in expected:
        assert message.startswith(str(path))


def test_checkpoint_minutes_changes_neither_the_job_nor_its_fingerprint(write_job, tmp_path):
    """How often a run checkpoints does not change its result: default 5, 0 and null
    accepted; not in the fingerprint, not noted in the description as a changed value,
    and a run started with one value resumes with another (its spec.yaml may even predate
    the key)."""
    from cvtrain import runs
    from cvtrain.errors import UsageError
    from cvtrain.training.identity import fingerprint, refuse_other_spec

    path = write_job("job.yaml", "description: ten epochs\n" + MINIMAL)
    plain = load_spec(path, seed=0)
    assert plain.training.checkpoint_minutes == 5
    assert "checkpoint_minutes: 5\n" in plain.to_yaml()
    for value, parsed in (("0", 0), ("null", None), ("0.5", 0.5)):
        other = load_spec(path, [f"training.checkpoint_minutes={value}"], seed=0)
        assert other.training.checkpoint_minutes == parsed
        assert other.description == "ten epochs"
        assert fingerprint(other, "d" * 64) == fingerprint(plain, "d" * 64)
    run = runs.RunFolder.at(tmp_path / "run")
    run.path.mkdir()
    older = plain.to_yaml().replace("  checkpoint_minutes: 5\n", "")
    for then in (load_spec(path, ["training.checkpoint_minutes=0"], seed=0).to_yaml(), older):
        run.file(runs.SPEC).write_text(then)
        refuse_other_spec(run, plain, "was started with")  # not refused
    changed = load_spec(path, ["training.epochs=3", "training.checkpoint_minutes=1"], seed=0)
    assert changed.description == "ten epochs; changed by --set training.epochs=3"
    assert fingerprint(changed, "d" * 64) != fingerprint(plain, "d" * 64)
    with pytest.raises(UsageError, match=r"\(training.epochs: 30 then, 3 now\)"):
        refuse_other_spec(run, changed, "was started with")


def test_extends_cycle_is_refused(write_job):
    write_job("a.yaml", "extends: b.yaml\n")
    b = write_job("b.yaml", "extends: a.yaml\n")
    with pytest.raises(SpecError, match="cycle"):
        load_spec(b)


def test_bad_override_syntax():
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        apply_overrides({}, ["training.epochs"])
    with pytest.raises(SpecError, match="is a value, not a mapping"):
        apply_overrides({"training": {"epochs": 3}}, ["training.epochs.x=1"])


@pytest.mark.slow
def test_cli_refuses_bad_spec_with_one_line_and_exit_2(write_job):
    path = write_job("bad.yaml", MINIMAL + "training: {epochs: -3}\n")
    result = run_cli("run", path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"{path}: training.epochs: expected a number greater than or equal to 1" in lines[0]
    result = run_cli("jobs", "validate", path)
    assert result.returncode == 2 and "training.epochs" in result.stderr
    result = run_cli("run", "no/such/job.yaml")
    assert result.returncode == 2 and "no such job file" in result.stderr


def test_cli_jobs_commands_without_tensorflow():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cvtrain.cli import app\n"
        "r = CliRunner()\n"
        "for args in (['--help'], ['jobs', 'list'], ['jobs', 'validate'],"
        " ['jobs', 'show', 'basenet'], ['jobs', 'schema'], ['run', '--help'],"
        " ['data', 'synth', 'cifar100', '--help'], ['predict', '--help'],"
        " ['export', '--help']):\n"
        "    res = r.invoke(app, args)\n"
        "    assert res.exit_code == 0, (args, res.output)\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'matplotlib', 'boto3') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


@pytest.mark.slow
def test_jobs_list_validate_show_schema():
    listing = run_cli("jobs", "list", env={"COLUMNS": "200"})
    assert listing.returncode == 0
    for name in CIFAR_JOBS:
        assert name in listing.stdout
    assert "0.7536" in listing.stdout
    result = run_cli("jobs", "validate")
    assert result.returncode == 0 and f"{len(JOB_FILES)} of {len(JOB_FILES)}" in result.stdout
    shown = run_cli("jobs", "show", "jobs/cifar/earlystop.yaml", "--set", "training.epochs=5")
    assert shown.returncode == 0 and "epochs: 5" in shown.stdout and "extends" not in shown.stdout
    schema = json.loads(run_cli("jobs", "schema").stdout)
    assert schema["additionalProperties"] is False
    assert "extends" in schema["properties"]
