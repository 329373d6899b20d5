"""The whole coursework as one set (`make reproduce-demo`: every job under jobs/, tiny
synthetic CIFAR and birds, one epoch each), run twice: the second run trains nothing; a
changed job trains again, alone; the report has every experiment with the report's
numbers."""

import json
import os
import shutil
import subprocess

import pytest
from conftest import JOBS, ROOT, run_cli

pytestmark = pytest.mark.slow


def test_make_reproduce_demo_twice_then_one_changed_job(tmp_path):
    demo = tmp_path / "demo"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    make = ["make", "-s", "reproduce-demo", "PYTHON=python3", f"REPRO_DEMO_DIR={demo}"]
    first = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, env=env,
                           timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads((demo / "report" / "report.json").read_text())
    rows = {r["job"]: r for r in report["rows"]}
    assert len(rows) == 12 and all(r["status"] == "complete" for r in rows.values())
    assert rows["earlystop"]["report_accuracy"] == 0.7536  # the coursework's number
    assert "missing" not in (demo / "report" / "report.md").read_text()
    runs_before = {job: sorted(p.name for p in (demo / "runs" / job).iterdir())
                   for job in rows}

    second = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    assert " ".join(second.stdout.split()).count("reused:") == 12
    assert {job: sorted(p.name for p in (demo / "runs" / job).iterdir())
            for job in rows} == runs_before  # nothing trained, nothing new

    # a copy of the jobs where one job changes: only that one trains again (a changed
    # description alone changes nothing)
    jobs = tmp_path / "jobs"
    shutil.copytree(JOBS, jobs)
    early = jobs / "cifar" / "earlystop.yaml"
    early.write_text(early.read_text().replace('description: "', 'description: "(edited) ', 1)
                     + "\ndata:\n  validation_split: 0.2\n")
    third = run_cli("run", jobs, "--seed", "0", "--out", demo / "runs", "--set",
                    "training.epochs=1", "--set",
                    f"cifar100:data.path={demo / 'cifar-100-binary.tar.gz'}", "--set",
                    "cifar100:data.num_classes=5", "--set", f"cub200:data.path={demo / 'cub'}",
                    "--set", "cub200:model.weights=none")
    assert third.returncode == 0, third.stderr[-2000:]
    assert " ".join(third.stdout.split()).count("reused:") == 11
    after = {job: sorted(p.name for p in (demo / "runs" / job).iterdir()) for job in rows}
    assert [job for job in rows if after[job] != runs_before[job]] == ["earlystop"]
