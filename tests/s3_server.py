"""A real S3 endpoint for the storage tests: moto's server on 127.0.0.1, spoken to over HTTP.

Import the fixtures into a test module (``from s3_server import s3, s3_server``). Nothing
is mocked in-process: boto3, the CLI subprocesses and awscli all talk HTTP to the server.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass

import pytest

FAKE_KEY = "testing"
FAKE_SECRET = "testing"

SERVER_SCRIPT = (
    "import logging, sys\n"
    "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
    "from moto.server import ThreadedMotoServer\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
    "server.start()\n"
    "print(server.get_host_and_port()[1], flush=True)\n"
    "sys.stdin.read()\n"  # until the parent closes our stdin
    "server.stop()\n"
)


def start_server_process(extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """moto's ThreadedMotoServer in its own process (own settings, own GIL); (proc, url)."""
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    port = proc.stdout.readline().strip()
    if not port.isdigit():
        proc.kill()
        raise RuntimeError("moto server did not start")
    return proc, f"http://127.0.0.1:{port}"


def stop_server_process(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3_server():
    """moto's ThreadedMotoServer on 127.0.0.1 for the whole session: its URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class S3Env:
    endpoint: str
    bucket: str
    env: dict
    client: object

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])


def isolate_aws_env(monkeypatch, tmp_path, endpoint: str, key=FAKE_KEY, secret=FAKE_SECRET):
    """Fake credentials and the endpoint in os.environ (so CLI subprocesses inherit them),
    and no user AWS configuration."""
    env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
           "AWS_EC2_METADATA_DISABLED": "true"}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3",
                 "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from cvtrain.storage import s3 as s3mod

    monkeypatch.setattr(s3mod, "_clients", {})  # clients made under other settings
    return env


def make_client(endpoint: str, key=FAKE_KEY, secret=FAKE_SECRET):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}))


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path) -> S3Env:
    """A fresh bucket on the session server, with the environment pointing at it."""
    env = isolate_aws_env(monkeypatch, tmp_path, s3_server)
    client = make_client(s3_server)
    bucket = f"cvtrain-test-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    return S3Env(s3_server, bucket, env, client)
