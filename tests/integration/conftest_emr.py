"""Fixtures of the AWS tests: one moto server (server mode) per session, clients, a counting
server, and :class:`MotoRelay`, a plain HTTP relay to moto that tests extend.

Imported from tests/integration/test_emr.py and the AWS connectors' tests. Nothing here patches
boto3: every call goes over HTTP to a ``moto.server.ThreadedMotoServer`` through ``endpoint_url``.
"""

from __future__ import annotations

import contextlib
import http.client
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


#: Response headers a relay does not pass on (it sends the body whole, with its own length).
_HOP_HEADERS = ("content-length", "connection", "transfer-encoding", "server", "date")


class MotoRelay:
    """A plain HTTP relay to the moto server at ``target``: point a client's ``endpoint_url`` at
    ``url``. Every POST goes through :meth:`handle`, which forwards it to moto (:meth:`forward`);
    a subclass records, delays or answers requests itself, and fills ``requests`` with
    ``(action, JSON body)`` pairs. A context manager: the server runs inside the ``with``.
    """

    def __init__(self, target: str):
        self.target = target.split("//", 1)[1]
        self.requests: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = (self.headers.get("X-Amz-Target") or "").rsplit(".", 1)[-1]
                status, headers, data = relay.handle(action, body, self)
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, action: str, body: bytes,
               request: http.server.BaseHTTPRequestHandler) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one request (``action``: the ``X-Amz-Target`` operation): ``(status, headers, body)``."""
        return self.forward(body, request)

    def forward(self, body: bytes,
                request: http.server.BaseHTTPRequestHandler) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request to moto; return its answer."""
        conn = http.client.HTTPConnection(self.target, timeout=60)
        conn.request("POST", request.path, body, {k: v for k, v in request.headers.items() if k.lower() != "host"})
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_HEADERS]
        conn.close()
        return status, headers, data

    def bodies(self, action: str) -> list[dict]:
        """The JSON bodies of the recorded requests of ``action``."""
        return [p for a, p in self.requests if a == action]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory):
    """The emrflow wheel, built once with pip wheel --no-deps."""
    from emrflow.deploy.emr import build_wheel
    return build_wheel(str(tmp_path_factory.mktemp("wheel")))
