"""The docker runner: ``cvtrain run JOB --runner docker`` runs the same ``cvtrain run`` in
the cvtrain image, through the ``docker`` command line (no SDK dependency).

:func:`build_run_argv` (in :mod:`cvtrain.runners.docker_argv`) turns a plan (mounts,
environment names, user, GPUs, network) into the ``docker run`` argument list and does
nothing else, so it is tested without an engine.
:class:`DockerRunner` makes the plan from the resolved spec and the host's environment,
checks the engine and the image, runs the container with its output streamed live and
returns what became of the run (the container's exit code, and the run folder and metrics
the container handed back).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cvtrain.errors import CvtrainError, DataError, UsageError
from cvtrain.runners import Runner
from cvtrain.runners.docker_argv import DEFAULT_NETWORK, Mount, build_run_argv, gpu_args
from cvtrain.runs import RunResult

DEFAULT_IMAGE = "cvtrain:latest"
DEFAULT_GPUS = "all"

#: where things live inside the container
C_JOB = "/job/spec.yaml"
C_RUNS = "/runs"
C_RESULTS = "/results"
C_CACHE = "/cache/cvtrain"
C_DATA = "/data"
C_AWS = "/aws"
C_HOME = "/tmp"
C_SCRATCH_RUNS = "/tmp/runs"
C_RESULT = "/result"  # a per-run host folder where the container leaves the run's metrics

#: host variables handed to the container by name only (`docker run -e NAME`): docker reads
#: the value from its own environment, so no value appears in an argument list or on disk
PASS_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
    "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
    "AWS_EC2_METADATA_DISABLED",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "CVTRAIN_DEBUG", "TF_CPP_MIN_LOG_LEVEL",
)

#: ``docker run`` stderr that means the engine has no GPU runtime for ``--gpus``
_NO_GPU_RUNTIME = re.compile(
    r"could not select device driver|nvidia-container-cli|unknown or invalid runtime name|"
    r"no known GPU vendor|CDI device injection failed", re.I)


class DockerError(CvtrainError):
    """The container engine cannot be used: no ``docker`` command, no daemon."""


class ImageNotFound(UsageError):
    """``--image`` names an image this engine does not have."""


class GpuRuntimeMissing(UsageError):
    """``--gpus`` asked for GPUs and the engine has no GPU runtime."""


# ---------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """What one container run needs: the spec file's text, the folders to create on the
    host before starting, and the argv."""

    spec_text: str
    argv: list[str]
    create: list[Path] = field(default_factory=list)
    #: host folders behind container paths the run prints (``/runs`` -> ``--out``)
    shown: dict[str, Path] = field(default_factory=dict)


def _is_uri(location: str) -> bool:
    return "://" in location


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:60].strip("-.") or "job"


class DockerRunner(Runner):
    """Runs a job in a container of the cvtrain image, with the ``docker`` CLI.

    Our words and Docker's:

    =====================  ==========================================================
    cvtrain                Docker
    =====================  ==========================================================
    the image (--image)    an image whose ENTRYPOINT is ``cvtrain`` (docker/Dockerfile)
    a run                  one ``docker run --rm`` container, named ``cvtrain-<job>-<hex>``
    the job file           the spec resolved on the host (extends, --set, --seed), bind-
                           mounted read-only as ``/job/spec.yaml``
    --out (results folder) a bind mount of the host folder at ``/runs``
    --results s3://...     passed through; S3 settings and credentials by name (``-e NAME``)
    the dataset cache      a bind mount of the host cache at ``/cache/cvtrain``
                           (``CVTRAIN_CACHE``), so data is fetched once for both worlds
    a local path           each file or folder the spec names (``data.path``,
                           ``model.weights``: :func:`cvtrain.spec.local_paths`) bind-mounted
                           read-only under ``/data``, and the spec rewritten to point there
    the user               ``--user UID:GID`` of the caller: files in mounts are theirs
    --gpus all|N|none      ``--gpus all`` / ``--gpus "device=0,..,N-1"`` / no flag
    --network              ``--network`` (default host: the host's proxy, DNS, S3 endpoint)
    the exit code          the container's (125: docker could not start it)
    =====================  ==========================================================
    """

    name = "docker"

    def __init__(self, image: str | None = None, gpus: str | None = None,
                 network: str | None = None, docker: str = "docker",
                 environ: Mapping[str, str] | None = None):
        self.environ = os.environ if environ is None else environ
        self.image = image or self.environ.get("CVTRAIN_IMAGE") or DEFAULT_IMAGE
        self.gpus = gpus or DEFAULT_GPUS
        self.network = network or DEFAULT_NETWORK
        self.docker = docker
        gpu_args(self.gpus)  # refuse a bad --gpus before anything runs

    # ------------------------------------------------------------------ planning (no engine)

    def plan(self, spec, *, out: Path | None = None, run_id: str | None = None,
             results: str | None = None, endpoint_url: str | None = None,
             spec_file: Path | None = None, force: bool = False,
             result_dir: Path | None = None) -> Plan:
        """Mounts, environment and argv for running ``spec``; touches nothing.

        ``spec_file`` is where the caller will write :attr:`Plan.spec_text` on the host;
        ``result_dir`` a host folder where cvtrain in the container leaves the run's metrics
        (``$CVTRAIN_RESULT_FILE``) for a set's table.
        """
        from cvtrain.paths import cache_dir, default_out_dir
        from cvtrain.runners import as_spec
        from cvtrain.spec import local_paths, with_values

        spec = as_spec(spec)
        mounts: list[Mount] = []
        create: list[Path] = []
        shown: dict[str, Path] = {}
        set_env: dict[str, str] = {"HOME": C_HOME, "CVTRAIN_CACHE": C_CACHE,
                                   "KERAS_HOME": f"{C_CACHE}/keras"}

        moved: dict[str, str] = {}  # key -> where the container sees that file or folder
        for i, local in enumerate(local_paths(spec)):
            host = Path(local.value).expanduser().resolve()
            if not host.exists():
                raise DataError(f"{local.key}: {local.value}: no such file or folder")
            moved[local.key] = f"{C_DATA}/{i}/{host.name}"
            mounts.append(Mount(host, moved[local.key], readonly=True))
        if moved:
            spec = with_values(spec, moved)

        if spec_file is not None:
            mounts.append(Mount(Path(spec_file), C_JOB, readonly=True))
        if result_dir is not None:
            mounts.append(Mount(Path(result_dir), C_RESULT))
            set_env["CVTRAIN_RESULT_FILE"] = f"{C_RESULT}/run.json"

        args = ["run", C_JOB]
        if results and not _is_uri(results):  # a local results root: mount it too
            host_results = Path(results).expanduser().resolve()
            create.append(host_results)
            mounts.append(Mount(host_results, C_RESULTS))
            shown[C_RESULTS] = host_results
            results = C_RESULTS
        if out is not None or not results:
            host_out = Path(out or default_out_dir()).expanduser().resolve()
            create.append(host_out)
            mounts.append(Mount(host_out, C_RUNS))
            shown[C_RUNS] = host_out
            args += ["--out", C_RUNS]
        else:  # results go to the bucket; the run folder is scratch inside the container
            args += ["--out", C_SCRATCH_RUNS]
        if run_id:
            args += ["--run-id", run_id]
        if results:
            args += ["--results", results]
        if endpoint_url:
            args += ["--endpoint-url", endpoint_url]
        if force:
            args += ["--force"]

        host_cache = cache_dir(self.environ).expanduser().resolve()
        create.append(host_cache)
        mounts.append(Mount(host_cache, C_CACHE))

        pass_env = [k for k in PASS_ENV if k in self.environ]
        if self.environ.get("AWS_PROFILE"):
            from cvtrain.runners.docker_aws import aws_profile_mounts

            mounts += aws_profile_mounts(self.environ, set_env)
        ca = self.environ.get("AWS_CA_BUNDLE")
        if ca and Path(ca).is_file():
            mounts.append(Mount(Path(ca).resolve(), f"{C_AWS}/ca-bundle.pem", readonly=True))
            set_env["AWS_CA_BUNDLE"] = f"{C_AWS}/ca-bundle.pem"

        name = f"cvtrain-{_safe_name(spec.name)}-{secrets.token_hex(3)}"
        argv = build_run_argv(
            image=self.image, args=args, mounts=mounts, pass_env=pass_env, set_env=set_env,
            user=f"{os.getuid()}:{os.getgid()}", gpus=self.gpus, network=self.network,
            name=name, labels={"io.cvtrain.job": spec.name}, docker=self.docker)
        return Plan(spec.to_yaml(), argv, create, shown)

    # ------------------------------------------------------------------ the engine

    def _docker(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([self.docker, *args], capture_output=True, text=True,
                              timeout=timeout, env=dict(self.environ), stdin=subprocess.DEVNULL)

    def check_engine(self) -> str:
        """The daemon's version; one clear :class:`DockerError` when there is none."""
        if shutil.which(self.docker, path=self.environ.get("PATH")) is None:
            raise DockerError(f"{self.docker}: command not found; install Docker "
                              "(https://docs.docker.com/engine/install/) or use --runner local")
        where = self.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            done = self._docker("version", "--format", "{{.Server.Version}}")
        except subprocess.TimeoutExpired:
            raise DockerError(f"docker: the Docker daemon at {where} did not answer in 30 s")\
                from None
        if done.returncode != 0 or not done.stdout.strip():
            said = next((ln.strip() for ln in done.stderr.splitlines() if ln.strip()), "")
            if "permission denied" in said.lower():
                hint = "add your user to the docker group, or run as root"
            else:
                hint = "start it (e.g. sudo systemctl start docker) or set DOCKER_HOST"
            said = f" ({said.removeprefix('error during connect: ')[:160]})" if said else ""
            raise DockerError(f"docker: cannot reach the Docker daemon at {where}{said}; {hint}")
        return done.stdout.strip()

    def check_image(self) -> None:
        done = self._docker("image", "inspect", "--format", "{{.Id}}", self.image)
        if done.returncode != 0:
            raise ImageNotFound(
                f"--image {self.image}: no such image on this Docker engine; build it "
                "(make image: it runs on GPUs and CPUs) or pull it "
                f"(docker pull {self.image})")

    def stream(self, argv: list[str]) -> tuple[int, str]:
        """Run ``argv`` with stdout inherited and stderr copied through as it comes; return
        the exit code and the last few kB of stderr (to recognise docker's own errors)."""
        from cvtrain import stop

        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=dict(self.environ))
        tail = b""
        out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
        # SIGTERM goes on to docker, which hands it to the container (sig-proxy): cvtrain
        # in there stops at its safe point and its exit code (75) comes back
        with stop.forwarding(proc):
            return self._follow(proc, argv, out, tail)

    def _follow(self, proc, argv, out, tail) -> tuple[int, str]:
        try:
            fd = proc.stderr.fileno()
            while chunk := os.read(fd, 65536):
                if out is not None:
                    out.write(chunk)
                    out.flush()
                else:
                    sys.stderr.write(chunk.decode(errors="replace"))
                tail = (tail + chunk)[-8192:]
            return proc.wait(), tail.decode(errors="replace")
        except KeyboardInterrupt:
            # docker forwards SIGINT to the container (sig-proxy); give cvtrain in there
            # time to stop cleanly, then make sure nothing is left running
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                name = argv[argv.index("--name") + 1] if "--name" in argv else None
                if name:
                    subprocess.run([self.docker, "kill", name], capture_output=True, timeout=30)
                proc.kill()
                proc.wait()
            raise
        finally:
            proc.stderr.close()

    def run(self, spec, *, out: Path | None = None, run_id: str | None = None,
            results: str | None = None, endpoint_url: str | None = None,
            force: bool = False) -> RunResult:
        """Run ``spec`` in a container: what became of it (the container's exit code)."""
        from cvtrain.runners.result import read_result

        self.check_engine()
        self.check_image()
        with tempfile.TemporaryDirectory(prefix="cvtrain-docker-") as tmp:
            spec_file = Path(tmp) / "spec.yaml"
            result_dir = Path(tmp) / "result"
            result_dir.mkdir(mode=0o777)
            result_dir.chmod(0o777)  # writable by the container user, whoever it is
            plan = self.plan(spec, out=out, run_id=run_id, results=results,
                             endpoint_url=endpoint_url, spec_file=spec_file, force=force,
                             result_dir=result_dir)
            spec_file.write_text(plan.spec_text, encoding="utf-8")
            spec_file.chmod(0o644)  # readable by the container user, whoever it is
            Path(tmp).chmod(0o755)
            for folder in plan.create:
                folder.mkdir(parents=True, exist_ok=True)  # by us, not root via docker
            where = "".join(f"; {c} is {h}" for c, h in plan.shown.items())
            print(f"cvtrain: docker: {self.image}, gpus {self.gpus}, network {self.network}"
                  f"{where}", file=sys.stderr, flush=True)
            if self.environ.get("CVTRAIN_DEBUG"):
                import shlex

                print(f"cvtrain: {shlex.join(plan.argv)}", file=sys.stderr, flush=True)
            code, tail = self.stream(plan.argv)
            result = (read_result(result_dir / "run.json", plan.shown) if code == 0
                      else RunResult(None, None, code))
        if code == 125 and _NO_GPU_RUNTIME.search(tail):
            raise GpuRuntimeMissing(
                f"--gpus {self.gpus}: this Docker engine has no GPU runtime; install the NVIDIA "
                "driver and the NVIDIA Container Toolkit, or run with --gpus none")
        return result


__all__ = ["DEFAULT_GPUS", "DEFAULT_IMAGE", "DEFAULT_NETWORK", "PASS_ENV", "DockerError",
           "DockerRunner", "GpuRuntimeMissing", "ImageNotFound", "Mount", "Plan",
           "build_run_argv", "gpu_args"]
