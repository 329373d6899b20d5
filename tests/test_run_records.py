"""What a run's records say, without training: a refused resume that says what differs
and what to type, runs on synthetic data never presented as beating the report, `results
compare` that compares data by content and writes a plot only when asked, one exit code
for "not found", plain numbers in metrics.json and a resolved spec whose description
says which --set values changed it."""

import json

import pytest
import yaml
from conftest import ROOT, fake_run, run_cli

from cvtrain import coursework_report, runs
from cvtrain.errors import StorageError, UsageError
from cvtrain.results import compare_runs, list_runs, resolve_run
from cvtrain.spec import load_spec, spec_from_text
from cvtrain.training.metrics import f32

BASENET = ROOT / "jobs" / "cifar" / "basenet.yaml"


def basenet_run(root, run_id, *, accuracy=0.5, synthetic=False, sha="a" * 64,
                path="data.tgz", batch=32, complete=True, sets=()):
    """A BaseNet run folder with its metrics, without training."""
    spec = load_spec(BASENET, [f"data.path={path}", f"training.batch_size={batch}", *sets])
    return fake_run(root, spec.name, run_id, spec=spec, complete=complete, metrics={
        "job": spec.name, "run_id": run_id, "test_accuracy": accuracy, "test_loss": 1.5,
        "best_epoch": 1, "epochs_run": 1, "wall_seconds": 3.0, "seed": 0,
        "started": f"2026-01-01T00:00:0{len(run_id) % 10}+00:00",
        "finished": f"2026-01-01T00:01:0{len(run_id) % 10}+00:00",
        "report": {"test_accuracy": 0.3872, "test_loss": 2.5894},
        "dataset": {"name": "cifar100", "source": path, "sha256": sha,
                    "synthetic": synthetic}})


# ------------------------------------------------------------------ resume refused


def test_a_refused_resume_names_the_values_and_what_to_type(tmp_path):
    from cvtrain.training.identity import refuse_other_spec

    run = runs.RunFolder(tmp_path, "basenet", "r").prepare()
    started = load_spec(BASENET, ["training.epochs=2"], seed=0)
    run.file(runs.SPEC).write_text(started.to_yaml())
    refuse_other_spec(run, started, "was started with")  # the same spec: resumes
    now = load_spec(BASENET, ["training.epochs=2"])  # --seed 0 left out
    with pytest.raises(UsageError) as err:
        refuse_other_spec(run, now, "was started with")
    text = str(err.value)
    assert "this run id was started with a different spec (seed: 0 then, none now)" in text
    assert "to resume, repeat the options it was started with (--seed 0)" in text
    assert text.endswith("to start afresh, choose another --run-id")
    other = load_spec(BASENET, ["training.epochs=3"], seed=0)
    with pytest.raises(UsageError) as err:
        refuse_other_spec(run, other, "was started with")
    assert "(training.epochs: 2 then, 3 now)" in str(err.value)  # not the description
    assert "(--set training.epochs=2)" in str(err.value)


# ------------------------------------------------------------------ synthetic data


def test_runs_on_synthetic_data_are_marked_and_never_compared_with_the_report(tmp_path):
    basenet_run(tmp_path, "real1", accuracy=0.41)
    basenet_run(tmp_path, "synth2", accuracy=0.987, synthetic=True)
    rows = {r["run_id"]: r for r in list_runs(str(tmp_path))}
    assert rows["real1"]["synthetic"] is False
    assert rows["real1"]["accuracy_difference"] == pytest.approx(0.41 - 0.3872)
    assert rows["synth2"]["synthetic"] is True and rows["synth2"]["accuracy_difference"] is None
    assert rows["synth2"]["test_accuracy"] == 0.987  # the number itself is kept

    table = run_cli("results", "ls", tmp_path, env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    synth_line = next(line for line in table.stdout.splitlines() if "synth2" in line)
    assert "synthetic" in synth_line and "+0.5998" not in table.stdout
    assert "+0.0228" in table.stdout  # the real run's difference stands
    shown = run_cli("results", "show", tmp_path / "basenet" / "synth2", env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "(synthetic data)" in shown.stdout and "+0.5998" not in shown.stdout

    report = coursework_report.build(str(tmp_path), ROOT / "jobs")
    base = next(r for r in report["rows"] if r["job"] == "basenet")
    assert base["run_id"] == "synth2" and base["synthetic"] is True  # the latest
    assert base["accuracy_difference"] is None and base["loss_difference"] is None
    md = coursework_report.markdown(report)
    assert "**Synthetic data**" in md and "| basenet | 0.3872 | 0.9870 | *synthetic* |" in md
    assert "+0.5998" not in md


def test_the_run_summary_marks_synthetic_data():
    from rich.console import Console

    from cvtrain.console import summary_table

    metrics = {"job": "basenet", "run_id": "x", "test_accuracy": 0.987, "test_loss": 0.1,
               "epochs_run": 3, "best_epoch": 3, "wall_seconds": 5.0,
               "report": {"test_accuracy": 0.7536, "test_loss": 0.8629},
               "dataset": {"synthetic": True}}
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(summary_table(metrics, ROOT))
    text = " ".join(console.export_text().split())
    assert "(synthetic data)" in text and "0.2334" not in text and "n/a" in text
    assert "its difference from them means nothing" in text
    metrics["dataset"]["synthetic"] = False
    console.print(summary_table(metrics, ROOT))
    assert "+0.2334" in console.export_text()


# ------------------------------------------------------------------ results compare


@pytest.mark.slow
def test_compare_takes_the_data_by_content_and_plots_only_when_asked(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    basenet_run(root, "20260101-000000-aaaa", path="data/cifar.tgz", batch=32)
    basenet_run(root, "20260101-000001-bbbb", path="/abs/data/cifar.tgz", batch=16)
    refs = [resolve_run(f"basenet/{r}", str(root))
            for r in ("20260101-000000-aaaa", "20260101-000001-bbbb")]
    result = compare_runs(refs)
    assert "data.path" not in result.spec_diff and "description" not in result.spec_diff
    assert "training.batch_size" in result.spec_diff and "data.sha256" not in result.spec_diff

    basenet_run(root, "20260101-000002-cccc", path="data/cifar.tgz", sha="b" * 64)
    other = compare_runs([refs[0], resolve_run("basenet/20260101-000002-cccc", str(root))])
    assert other.spec_diff == {"data.sha256": ["a" * 12, "b" * 12]}  # same path, other data

    monkeypatch.chdir(tmp_path)
    shown = run_cli("results", "compare", *(f"basenet/{r.run_id}" for r in refs), "--root",
                    root, cwd=tmp_path, env={"COLUMNS": "70"})
    assert shown.returncode == 0, shown.stderr
    assert not (tmp_path / "compare.png").exists() and "curves:" not in shown.stdout
    # run ids whole in the headers, on a narrow terminal too
    assert "20260101-000000-aaaa" in shown.stdout and "20260101-000001-bbbb" in shown.stdout
    assert "training.batch_size" in shown.stdout
    plotted = run_cli("results", "compare", *(f"basenet/{r.run_id}" for r in refs), "--root",
                      root, "--plot", tmp_path / "c.png", cwd=tmp_path)
    assert plotted.returncode == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------ not found


@pytest.mark.slow
def test_not_found_is_one_exit_code(tmp_path):
    with pytest.raises(StorageError):
        resolve_run(str(tmp_path / "basenet" / "nope"))
    with pytest.raises(StorageError):
        list_runs(str(tmp_path / "nothing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):  # there, but not a folder: bad input
        list_runs(str(tmp_path / "file"))
    basenet_run(tmp_path / "runs", "r1")
    for args in (("results", "ls", tmp_path / "nothing"),
                 ("results", "show", tmp_path / "runs" / "basenet" / "nope"),
                 ("results", "show", "basenet/nope", "--root", tmp_path / "runs"),
                 ("results", "report", tmp_path / "nothing", "--out", tmp_path / "rep")):
        done = run_cli(*args)
        assert done.returncode == 4, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# ------------------------------------------------------------------ numbers


def test_float32_numbers_are_written_as_their_shortest_decimal():
    import numpy as np

    assert f32(0.47600001096725464) == 0.476
    assert f32(np.float32(0.01)) == 0.01 and f32(None) is None
    assert np.float32(f32(np.float32(2.5894))) == np.float32(2.5894)  # nothing lost
    assert json.dumps(f32(np.float32(1 / 3))) == "0.33333334"


# ------------------------------------------------------------------ words


def test_the_resolved_spec_says_which_set_values_changed_it():
    plain = load_spec(BASENET)
    assert plain.description == "Part 1: BaseNet baseline, 30 epochs"
    spec = load_spec(BASENET, ["training.epochs=3"])
    assert spec.description == ("Part 1: BaseNet baseline, 30 epochs; changed by --set "
                                "training.epochs=3")
    same = load_spec(BASENET, ["training.epochs=30"])  # the file's own value: no note
    assert same.description == plain.description
    # resolved again with the same values (a resumed Batch job): unchanged
    assert spec_from_text(spec.to_yaml(), "x", ["training.epochs=3"]) == spec
    again = spec_from_text(spec.to_yaml(), "x", ["model.name=basenet", "training.epochs=3"])
    assert again.description == spec.description  # nothing new changed
    more = spec_from_text(spec.to_yaml(), "x", ["training.batch_size=16"])  # a sweep's variant
    assert more.description.endswith("--set training.epochs=3 --set training.batch_size=16")
    own = load_spec(BASENET, ["training.epochs=3", "description=three epochs"])
    assert own.description == "three epochs"
    assert yaml.safe_load(spec.to_yaml())["description"] == spec.description
