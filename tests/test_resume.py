"""Interrupted runs continue: per-epoch checkpoints, SIGKILL then rerun with the same run
id, SIGTERM with its documented exit code, and identical results to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli

from cvtrain import runs
from cvtrain.data.cifar import write_synthetic_cifar100
from cvtrain.training import checkpoint

pytestmark = pytest.mark.slow  # every test here trains a model


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    # big enough that an epoch takes about a second: time to act between two epochs
    return write_synthetic_cifar100(tmp_path_factory.mktemp("resume-data"), classes=5,
                                    train_per_class=600, test_per_class=20, seed=4)


EPOCHS = 4  # every run here, so that each resumed one compares with one uninterrupted run


def job_args(archive, out, run_id, epochs=EPOCHS):
    return ["run", "augment", "--set", f"data.path={archive}", "--set", "data.num_classes=5",
            "--set", f"training.epochs={epochs}", "--seed", "3", "--out", str(out),
            "--run-id", run_id]


def start(args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "cvtrain", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epoch(run_path, epoch, proc, timeout=180):
    state = run_path / checkpoint.DIR / checkpoint.STATE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("no checkpoint in time")


def metrics_of(run_path):
    return json.loads((run_path / runs.METRICS).read_text())


CURVES = ("loss", "accuracy", "val_loss", "val_accuracy")


def history_of(run_path):
    """history.csv's epoch, loss and accuracy columns (not seconds: those are timings)."""
    rows = runs.parse_history((run_path / runs.HISTORY).read_text())
    return [(r["epoch"], *(r[c] for c in CURVES)) for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(archive, tmp_path_factory):
    """The reference: the same job, seed and spec run once without interruption (shared by
    every test that resumes, so the file runs one extra training run, not one per test)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    full = run_cli(*job_args(archive, out, "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    run_path = out / "augment" / "full"
    assert runs.verify(run_path) == []
    m = metrics_of(run_path)
    assert m["resumed_from_epoch"] is None and m["epochs_run"] == EPOCHS
    history = history_of(run_path)
    assert all(isinstance(v, float) for row in history for v in row[1:]), history  # no blanks
    return m, history


def assert_matches_uninterrupted(run_path, uninterrupted):
    """A resumed run ends exactly where the uninterrupted one does. Exact float equality:
    seeded CPU runs are bit-identical (op determinism; the resumed run reloads the saved
    model and optimizer and replays the same batches from the interrupted epoch on)."""
    ref, ref_history = uninterrupted
    m = metrics_of(run_path)
    keys = ("test_accuracy", "test_loss", "epochs_run", "best_epoch")
    assert {k: m[k] for k in keys} == {k: ref[k] for k in keys}
    history = history_of(run_path)
    assert [row[0] for row in history] == list(range(1, EPOCHS + 1))  # every epoch, once
    assert history == ref_history
    return m


def test_sigkill_then_rerun_resumes_and_matches_an_uninterrupted_run(archive, tmp_path,
                                                                     uninterrupted):
    run_path = tmp_path / "augment" / "k"
    proc = start(job_args(archive, tmp_path, "k"))
    wait_for_epoch(run_path, 2, proc)
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    assert not (run_path / runs.MANIFEST).exists()
    killed_at = json.loads((run_path / checkpoint.DIR / checkpoint.STATE).read_text())["epoch"]
    assert killed_at == 2

    resumed = run_cli(*job_args(archive, tmp_path, "k"), env={"COLUMNS": "160"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint of epoch 2" in resumed.stdout
    assert "epoch 3/4" in resumed.stdout and "epoch 1/4" not in resumed.stdout
    assert runs.verify(run_path) == []
    assert not (run_path / checkpoint.DIR).exists()
    m = assert_matches_uninterrupted(run_path, uninterrupted)
    assert m["resumed_from_epoch"] == 2


def test_sigterm_saves_and_exits_75_then_resumes(archive, tmp_path, uninterrupted):
    run_path = tmp_path / "augment" / "t"
    proc = start(job_args(archive, tmp_path, "t"))
    wait_for_epoch(run_path, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == checkpoint.EXIT_TERMINATED == 75, err[-3000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    saved = checkpoint.read(run_path)
    # the epoch seen, or a step of the next (where SIGTERM came), or the next
    assert saved is not None and 1 <= saved.epoch < EPOCHS
    assert f"the checkpoint of {saved.describe()} is kept" in err
    assert not (run_path / runs.MANIFEST).exists()
    again = run_cli(*job_args(archive, tmp_path, "t"), env={"COLUMNS": "160"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from the checkpoint of {saved.describe()}" in again.stdout
    assert runs.verify(run_path) == []
    m = assert_matches_uninterrupted(run_path, uninterrupted)
    assert m["resumed_from_epoch"] == saved.epoch


def test_resuming_with_another_spec_is_refused(archive, tmp_path):
    run_path = tmp_path / "augment" / "d"
    proc = start(job_args(archive, tmp_path, "d"))
    wait_for_epoch(run_path, 1, proc)
    proc.kill()
    proc.wait()
    other = job_args(archive, tmp_path, "d") + ["--set", "training.optimizer.learning_rate=0.1"]
    result = run_cli(*other)
    assert result.returncode == 2
    assert "started with a different spec" in result.stderr
    assert "(training.optimizer.learning_rate: 0.01 then, 0.1 now)" in result.stderr, \
        result.stderr
    assert "--set training.optimizer.learning_rate=0.01" in result.stderr


def test_ctrl_c_says_what_was_kept_restores_the_terminal_and_resumes(tmp_path):
    """SIGINT (Ctrl-C) after the first checkpoint, with the output on a terminal (so the
    progress bar is drawn): exit 130, one line on stderr naming the epoch kept and the
    command that resumes, the same line in log.txt, the cursor shown again; that command
    resumes the run."""
    import pty
    import re
    import shlex
    import threading

    data = write_synthetic_cifar100(tmp_path / "data", classes=3, train_per_class=20,
                                    test_per_class=4, seed=5)
    out = tmp_path / "runs"
    # many short epochs: the interrupt always lands before the run ends
    args = ["run", "basenet", "--set", f"data.path={data}", "--set", "data.num_classes=3",
            "--set", "training.epochs=30", "--seed", "0", "--out", str(out), "--run-id", "c"]
    run_path = out / "basenet" / "c"
    master, terminal = pty.openpty()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200"}
    # Ctrl-C as at a terminal: a test suite started in the background (``cmd &``, nohup)
    # ignores SIGINT, which its children inherit, and such a run rightly goes on
    proc = subprocess.Popen([sys.executable, "-m", "cvtrain", *args], cwd=ROOT, env=env,
                            stdout=terminal, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(terminal)
    shown = []

    def read_terminal():
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    wait_for_epoch(run_path, 1, proc)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err[-3000:]
    reader.join(timeout=10)
    os.close(master)

    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    line = lines[0]
    kept = checkpoint.read(run_path)
    assert kept is not None and not (run_path / runs.MANIFEST).exists()
    assert line.startswith(f"cvtrain: interrupted; checkpoint kept at {kept.describe()} "
                           f"in {run_path}; rerun with `cvtrain run basenet "), line
    assert line.endswith(" --run-id c` to resume"), line
    assert line.removeprefix("cvtrain: ") in (run_path / runs.LOG).read_text().splitlines()
    screen = b"".join(shown)
    hidden = b"\x1b[?25l"  # the progress bar hides the cursor...
    assert hidden in screen and b"\x1b[?25h" in screen[screen.rindex(hidden):]  # ...and back

    command = shlex.split(re.search(r"`(cvtrain run [^`]*)`", line).group(1))
    assert command[-2:] == ["--run-id", "c"] and "--seed" in command
    again = run_cli(*command[1:], env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from the checkpoint of {kept.describe()}" in again.stdout
    assert runs.verify(run_path) == []
    assert metrics_of(run_path)["resumed_from_epoch"] == kept.epoch
