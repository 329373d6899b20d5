"""infra/spot-watch.sh, the host's spot watcher that the stack's launch template installs:
run for real against a fake instance metadata service (IMDSv2 on 127.0.0.1) and a fake
``docker`` that records what it is asked; and the template embeds it verbatim."""

import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ROOT, load_template

SCRIPT = ROOT / "infra" / "spot-watch.sh"


class FakeIMDS(BaseHTTPRequestHandler):
    notice = False
    tokens_asked = 0

    def log_message(self, *args):
        pass

    def do_PUT(self):
        if self.path == "/latest/api/token" and self.headers.get(
                "X-aws-ec2-metadata-token-ttl-seconds"):
            type(self).tokens_asked += 1
            self._send(200, b"a-token")
        else:
            self._send(400, b"")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != "a-token":
            self._send(401, b"")  # IMDSv2: no token, no answer
        elif self.path == "/latest/meta-data/spot/instance-action" and type(self).notice:
            self._send(200, b'{"action": "terminate", "time": "2026-11-28T15:00:00Z"}')
        else:
            self._send(404, b"")

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.slow
def test_spot_notice_sends_sigterm_to_each_job_container_once(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeIMDS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    calls = tmp_path / "calls.txt"
    docker = tmp_path / "docker"
    docker.write_text("#!/bin/bash\n"
                      f"echo \"$*\" >> {calls}\n"
                      "if [ \"$1\" = ps ]; then printf 'c0ffee1\\nbeef002\\n'; fi\n")
    docker.chmod(0o755)
    env = {**os.environ, "SPOT_WATCH_IMDS": f"http://127.0.0.1:{server.server_port}",
           "SPOT_WATCH_DOCKER": str(docker), "SPOT_WATCH_INTERVAL": "0.1"}
    proc = subprocess.Popen(["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.8)
        assert FakeIMDS.tokens_asked >= 2 and not calls.exists()  # polling, no notice yet
        FakeIMDS.notice = True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (
                not calls.exists() or calls.read_text().count("kill") < 2):
            time.sleep(0.1)
        time.sleep(0.5)  # more polls after the notice: nobody is signalled twice
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        server.shutdown()
    lines = calls.read_text().splitlines()
    kills = [line for line in lines if line.startswith("kill")]
    assert kills == ["kill --signal TERM c0ffee1", "kill --signal TERM beef002"]
    assert "ps -q --filter label=com.amazonaws.ecs.task-arn" in lines
    assert "interruption notice: SIGTERM to container c0ffee1" in out


def test_launch_template_installs_the_watcher_verbatim_and_keeps_imds_from_containers():
    template = load_template(ROOT / "infra" / "cvtrain.yaml")
    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
    user_data = data["UserData"]["Fn::Base64"]
    embedded = user_data.split("<<'WATCH'\n", 1)[1].split("\nWATCH\n", 1)[0]
    assert embedded + "\n" == SCRIPT.read_text()
    assert user_data.startswith("MIME-Version: 1.0\n")  # Batch wants MIME multi-part
    assert "systemctl enable --now --no-block cvtrain-spot-watch.service" in user_data
