"""What a new user sees first: tables that keep ids whole at any width (plain text when
piped), --json on the commands that list or create something, help in the classic style,
did-you-mean, --set blamed for its own mistakes, shell completion. No training here."""

import io
import json
import re
from pathlib import Path

import pytest
from conftest import JOBS, fake_run, run_cli
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from cvtrain.cli import app
from cvtrain.console import print_table

BOX = re.compile("[─-╿]")  # box-drawing characters
RUN_ID = "20261128-061200-3f9a1c2b"
BIRDS = ["resnet50_features_dense", "resnet50_features_mlp", "resnet50_maps_convhead",
         "resnet50_finetune"]
STEPS = ["basenet", "normalize", "augment", "deeper", "batchnorm", "dropout", "earlystop",
         "bonus"]
NARROW_PIPE = {"COLUMNS": "80", "NO_COLOR": "1"}


def _table(ids: list[str]) -> Table:
    table = Table(title=f"runs in /a/long/results/folder/{'x' * 60}", title_justify="left")
    table.add_column("job", no_wrap=True)
    table.add_column("run id", no_wrap=True)
    table.add_column("note")
    for i, name in enumerate(ids):
        table.add_row(name, f"{RUN_ID}-{i}", "a remark that may wrap over several lines " * 2)
    return table


@pytest.mark.parametrize("terminal, width", [(False, 80), (True, 40), (True, 100), (True, 300)])
def test_tables_keep_identifiers_whole_at_any_width(terminal, width):
    ids = BIRDS
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system=None)
    print_table(_table(ids), console)
    text = out.getvalue()
    for i, name in enumerate(ids):
        assert re.search(rf"\b{name}\b.*\b{RUN_ID}-{i}\b", text), text
    assert "…" not in text and f"/a/long/results/folder/{'x' * 60}" in text
    if not terminal or width < 100:  # piped, or too narrow for the ids: plain text
        assert not BOX.search(text) and all(ln == ln.rstrip() for ln in text.splitlines())
    else:
        assert BOX.search(text) and max(len(ln) for ln in text.splitlines()) <= width


def test_run_log_prints_the_summary_whole_on_the_terminal_and_in_log_txt(tmp_path):
    from cvtrain.console import RunLog, summary_table

    metrics = {"job": BIRDS[1], "run_id": RUN_ID, "test_accuracy": 0.43, "test_loss": 2.3,
               "report": {"test_accuracy": 0.4313, "test_loss": 2.3488}, "epochs_run": 15,
               "best_epoch": 15, "wall_seconds": 61.0}
    folder = tmp_path / ("a-long-results-folder-" * 4) / BIRDS[1] / RUN_ID
    screen = io.StringIO()
    log = RunLog(Console(file=screen, width=60, force_terminal=True, color_system=None))
    log.attach_file(tmp_path / "log.txt")
    log.print(summary_table(metrics, folder))
    log.detach_file()
    for text in (screen.getvalue(), (tmp_path / "log.txt").read_text()):
        assert f"{BIRDS[1]} / {RUN_ID}\n" in text  # the title, in both
        assert f"run folder: {folder}\n" in text and "test accuracy" in text
    assert not BOX.search((tmp_path / "log.txt").read_text())


def _jobs_in(text: str) -> list[str]:
    names = set(STEPS + BIRDS)
    return [ln.split()[0] for ln in text.splitlines() if ln.split() and ln.split()[0] in names]


def test_jobs_list_piped_at_80_columns_is_plain_whole_and_in_steps_order():
    done = run_cli("jobs", "list", env=NARROW_PIPE)
    assert done.returncode == 0, done.stderr
    assert not BOX.search(done.stdout) and "…" not in done.stdout
    assert _jobs_in(done.stdout) == STEPS + BIRDS
    mlp = next(ln for ln in done.stdout.splitlines() if ln.startswith("resnet50_features_mlp"))
    assert mlp.split()[:3] == ["resnet50_features_mlp", "cub200", "resnet50_features_mlp"]


def test_jobs_list_json():
    done = CliRunner().invoke(app, ["jobs", "list", "--json"])
    assert done.exit_code == 0, done.output
    rows = json.loads(done.stdout)
    assert [r["job"] for r in rows] == STEPS + BIRDS
    earlystop = rows[STEPS.index("earlystop")]
    assert earlystop["early_stopping"] is True and earlystop["report_accuracy"] == 0.7536
    assert earlystop["path"] == "jobs/cifar/earlystop.yaml"


def test_the_coursework_report_lists_the_experiments_in_the_same_order():
    from cvtrain.coursework_report import _expected_jobs

    assert [j["job"] for j in _expected_jobs(JOBS)] == STEPS + BIRDS


def test_a_set_of_folders_runs_in_the_same_order(tmp_path):
    """`cvtrain run jobs` (and submit) take a folder's jobs as the steps build on each
    other; jobs named one by one keep the order given; a job of a user's folder without a
    description of its own comes after its described siblings."""
    from cvtrain.sets import load_set

    def names(refs):
        return [spec.name for _, spec in load_set(refs, [], 0)]

    assert names([str(JOBS)]) == STEPS + BIRDS
    assert names(["dropout", str(JOBS / "birds"), "basenet"]) == ["dropout", *BIRDS, "basenet"]
    for name in ("basenet.yaml", "normalize.yaml"):
        (tmp_path / name).write_text((JOBS / "cifar" / name).read_text())
    (tmp_path / "a_mine.yaml").write_text("extends: basenet.yaml\ntraining: {epochs: 1}\n")
    assert names([str(tmp_path)]) == ["basenet", "normalize", "a_mine"]


def test_jobs_list_outside_the_checkout_hints_at_cvtrain_jobs(tmp_path, monkeypatch):
    monkeypatch.delenv("CVTRAIN_JOBS", raising=False)
    done = run_cli("jobs", "list", cwd=tmp_path)  # the one line main() makes of the error
    assert done.returncode == 2 and "$CVTRAIN_JOBS" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    (tmp_path / "jobs").mkdir()
    monkeypatch.chdir(tmp_path)
    empty = CliRunner().invoke(app, ["jobs", "list"])
    assert empty.exit_code == 0 and empty.stdout == ""
    assert "no job files in jobs" in empty.stderr and "$CVTRAIN_JOBS" in empty.stderr


def _run_with_lr(root: Path, job: str, run_id: str, lr: float) -> Path:
    return fake_run(root, job, run_id, spec=f"name: {job}\ntraining:\n  optimizer:\n    "
                                            f"learning_rate: {lr}\n",
                    metrics={"job": job, "run_id": run_id, "test_accuracy": 0.41,
                             "test_loss": 2.5, "report": {"test_accuracy": 0.4171,
                                                          "test_loss": 2.5126},
                             "epochs_run": 2, "best_epoch": 2, "wall_seconds": 12.5,
                             "started": "2026-11-28T06:12:00+00:00"},
                    history="epoch,loss,accuracy,val_loss,val_accuracy,seconds\n"
                            "1,3.0,0.2,3.1,0.2,6\n2,2.5,0.4,2.6,0.4,6\n").path


def test_results_ls_and_show_piped_keep_ids_whole_and_json_parses(tmp_path, monkeypatch):
    for name, value in NARROW_PIPE.items():
        monkeypatch.setenv(name, value)
    _run_with_lr(tmp_path, "resnet50_features_dense", RUN_ID, 0.01)
    _run_with_lr(tmp_path, "resnet50_features_mlp", RUN_ID, 0.01)
    runner = CliRunner()
    listing = runner.invoke(app, ["results", "ls", str(tmp_path)])
    assert listing.exit_code == 0, listing.output
    assert not BOX.search(listing.stdout) and "…" not in listing.stdout
    for job in ("resnet50_features_dense", "resnet50_features_mlp"):
        assert re.search(rf"^{job}\s+{RUN_ID}\s+2026-11-28 06:12\s", listing.stdout, re.M)

    run = f"resnet50_features_mlp/{RUN_ID}"
    shown = runner.invoke(app, ["results", "show", run, "--root", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert str(tmp_path / "resnet50_features_mlp" / RUN_ID) in shown.stdout
    assert not BOX.search(shown.stdout) and "-0.0071" in shown.stdout
    as_json = json.loads(runner.invoke(app, ["results", "show", run, "--root", str(tmp_path),
                                             "--json"]).stdout)
    assert as_json["complete"] is True and as_json["metrics"]["run_id"] == RUN_ID
    assert {f["path"] for f in as_json["files"]} >= {"metrics.json", "manifest.json"}


@pytest.mark.slow  # matplotlib draws the curves
def test_results_compare_json(tmp_path):
    a = _run_with_lr(tmp_path, "resnet50_features_dense", RUN_ID, 0.01)
    b = _run_with_lr(tmp_path, "resnet50_features_dense", RUN_ID + "b", 0.001)
    done = run_cli("results", "compare", a, b, "--plot", tmp_path / "c.png", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [r["run"] for r in result["runs"]] == [f"resnet50_features_dense/{RUN_ID}",
                                                  f"resnet50_features_dense/{RUN_ID}b"]
    assert result["spec_diff"] == {"training.optimizer.learning_rate": [0.01, 0.001]}
    assert result["plot"] == str(tmp_path / "c.png")


def test_run_json_is_alone_on_stdout(monkeypatch, tmp_path):
    """`cvtrain run --json`: the run's own lines and summary table on stderr, the metrics
    as JSON on stdout; for a set, a list with each job's status."""
    from cvtrain.console import summary_table
    from cvtrain.runners import LocalRunner
    from cvtrain.runs import RunFolder, RunResult

    def fake_run(self, spec, *, out=None, run_id=None, **options):
        metrics = {"job": spec.name, "run_id": RUN_ID, "test_accuracy": 0.5, "test_loss": 2.0,
                   "report": {}, "epochs_run": 1, "best_epoch": 1, "wall_seconds": 1.0}
        path = tmp_path / spec.name / RUN_ID
        options["log"].print(f"[bold]run[/] {spec.name} / {RUN_ID} -> {path}")
        options["log"].print(summary_table(metrics, path))
        return RunResult(RunFolder.at(path), metrics)

    monkeypatch.setattr(LocalRunner, "run", fake_run)
    runner = CliRunner()
    one = runner.invoke(app, ["run", "basenet", "--json"])
    assert one.exit_code == 0, one.output
    result = json.loads(one.stdout)
    assert result["test_accuracy"] == 0.5
    assert result["run_folder"] == str(tmp_path / "basenet" / RUN_ID)
    assert "run folder: " in one.stderr and "test accuracy" in one.stderr

    several = runner.invoke(app, ["run", "basenet", "dropout", "--json"])
    assert several.exit_code == 0, several.output
    rows = json.loads(several.stdout)
    assert [(r["job"], r["status"], r["run"]["run_id"]) for r in rows] == [
        ("basenet", "done", RUN_ID), ("dropout", "done", RUN_ID)]
    assert "== [2/2] dropout" in several.stderr
    refused = runner.invoke(app, ["run", "basenet", "--json", "--runner", "docker"])
    assert refused.exit_code != 0
    # the runner's old option name still works for a release, saying so
    old = runner.invoke(app, ["run", "basenet", "--json", "--backend", "docker"])
    assert old.exit_code != 0 and "--backend is deprecated" in old.stderr
    assert "only with --runner local" in str(old.exception)


def test_help_escapes_defaults_and_hides_the_deprecated_option(monkeypatch):
    """--help as Typer prints it (its own notation for types), with our defaults shown as
    written (Rich markup escaped) and --backend, the deprecated name of --runner, hidden."""
    monkeypatch.setenv("COLUMNS", "120")
    runner = CliRunner()

    def helped(*args):
        return runner.invoke(app, [*args, "--help"], prog_name="cvtrain").stdout

    shown = helped("jobs", "list")
    assert "[default: ./jobs or $CVTRAIN_JOBS]" in shown
    assert "Usage: cvtrain jobs list [OPTIONS]" in shown
    run = helped("run")
    assert re.search(r"Usage: cvtrain run \[OPTIONS\] \W?JOB\W?\.\.\.", run)
    assert "--runner" in run and "--backend" not in run
    assert "[default: ./runs or $CVTRAIN_RUNS]" in run


def test_did_you_mean_and_set_blame():
    from cvtrain.errors import UsageError
    from cvtrain.spec import SpecError

    runner = CliRunner()
    done = runner.invoke(app, ["run", "basnet"])
    assert isinstance(done.exception, UsageError)
    assert str(done.exception).endswith("; did you mean basenet?")
    bad = runner.invoke(app, ["jobs", "show", "basenet", "--set", "training.epchs=2"])
    assert isinstance(bad.exception, SpecError)
    assert str(bad.exception).startswith("--set training.epchs=2: unknown key;")
    assert str(bad.exception).endswith("(job: jobs/cifar/basenet.yaml)")


@pytest.mark.parametrize("value, blamed", [
    ("training.epochs=0", "--set training.epochs=0: expected a number greater than"),
    ("model.dropout=2", "--set model.dropout=2: expected a number less than 1"),
    ("foo.bar=1", "--set foo.bar=1: foo: unknown key"),
    ("model.name=nope", "--set model.name=nope: unknown model 'nope'"),
    ("model.name=resnet50_finetune", "--set model.name=resnet50_finetune: resnet50_finetune "
                                     "takes images"),
])
def test_set_mistakes_are_blamed_on_the_set(value, blamed):
    from cvtrain.spec import SpecError, load_spec

    with pytest.raises(SpecError) as err:
        load_spec(JOBS / "cifar" / "basenet.yaml", [value])
    assert str(err.value).startswith(blamed)
    from cvtrain.spec.load import load_raw, validate

    doc = load_raw(JOBS / "cifar" / "basenet.yaml")
    doc["training"]["epochs"] = 0  # a mistake of the file, not of the --set given with it
    with pytest.raises(SpecError, match=r"^broken.yaml: training.epochs: expected"):
        validate(doc, "broken.yaml", ["model.dropout=0.1"])


def test_shell_completion_scripts_and_job_names(monkeypatch):
    # the shell named, not detected from the parent processes (under make: sh, which
    # Typer does not complete for)
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    runner = CliRunner()
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="cvtrain")
    assert script.exit_code == 0 and "_CVTRAIN_COMPLETE=complete_bash" in script.stdout
    names = runner.invoke(app, [], prog_name="cvtrain", env={
        "_CVTRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "cvtrain run ba", "COMP_CWORD": "2"})
    assert names.stdout.split() == ["basenet", "batchnorm"]
