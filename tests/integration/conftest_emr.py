"""Fixtures of the EMR tests: one moto server (server mode) per session, clients, a counting server.

Imported from tests/integration/test_emr.py. Nothing here patches boto3: every
call goes over HTTP to a ``moto.server.ThreadedMotoServer`` through ``endpoint_url``.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import threading

import pytest

FAKE_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SECURITY_TOKEN": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "my-emrflow-bucket"


@pytest.fixture(scope="session")
def aws_env():
    """Fake credentials and region in the environment for the whole session."""
    old = {k: os.environ.get(k) for k in [*FAKE_ENV, "AWS_PROFILE", "AWS_ENDPOINT_URL"]}
    os.environ.update(FAKE_ENV)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def moto_endpoint(aws_env):
    """Start one ThreadedMotoServer on a free port; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def aws(moto_endpoint):
    """An :class:`EmrSession` on the moto server, with the templates' bucket created."""
    from emrflow.deploy.emr import EmrSession
    with EmrSession(region="us-east-1", endpoint_url=moto_endpoint) as session:
        with contextlib.suppress(session.s3.exceptions.BucketAlreadyOwnedByYou):
            session.s3.create_bucket(Bucket=BUCKET)
        yield session


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    def _any(self):
        self.server.requests.append((self.command, self.path))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

    def log_message(self, *args):
        pass


@pytest.fixture()
def counting_endpoint(aws_env):
    """A server that answers every request with 500 and records it: ``(url, requests list)``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.requests
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory):
    """The emrflow wheel, built once with pip wheel --no-deps."""
    from emrflow.deploy.emr import build_wheel
    return build_wheel(str(tmp_path_factory.mktemp("wheel")))
