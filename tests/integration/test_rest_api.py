"""docs/rest-api.yaml is a valid OpenAPI document that matches the server in both directions."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.test_standalone import SLOW_JOB, Cluster, cli, wait_for

pytestmark = pytest.mark.integration

SPEC_PATH = os.path.join(ROOT, "docs", "rest-api.yaml")


def load_spec() -> dict:
    with open(SPEC_PATH) as f:
        return yaml.safe_load(f)


def test_spec_is_valid_openapi():
    from openapi_spec_validator import validate
    validate(load_spec())


def test_documented_routes_are_the_served_routes():
    from emrflow.runtime.rest import create_app
    app = create_app(jm=None)
    served = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)  # <int:name> -> {name}
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method.lower()))
    documented = {(path, method) for path, item in load_spec()["paths"].items()
                  for method in item if method in ("get", "post", "patch", "delete", "put")}
    assert documented == served


def call(rest, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{rest}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        finally:
            exc.close()


def check(spec, path, method, status, body):
    from openapi_schema_validator import OAS30Validator
    schema = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    OAS30Validator(dict(schema, components=spec["components"])).validate(body)


def test_responses_match_the_documented_schemas(tmp_path):
    spec = load_spec()
    c = Cluster(str(tmp_path / "cluster"))
    try:
        job = tmp_path / "slow.py"
        job.write_text(SLOW_JOB)
        done = cli("run", "-d", "-m", c.rest, str(job), "300", workdir=c.workdir).stdout.split()[-1]
        wait_for(lambda: call(c.rest, "GET", f"/jobs/{done}")[1]["state"] == "FINISHED", what="finish")
        running = cli("run", "-d", "-p", "2", "-m", c.rest, str(job), "100000", workdir=c.workdir).stdout.split()[-1]
        vertex = call(c.rest, "GET", f"/jobs/{running}")[1]["vertices"][0]["id"]
        tm = call(c.rest, "GET", "/taskmanagers")[1]["taskmanagers"][0]["id"]
        for path, concrete in [("/config", "/config"), ("/overview", "/overview"), ("/jobs", "/jobs"),
                               ("/jobs/overview", "/jobs/overview"),
                               ("/jobs/{jobid}", f"/jobs/{done}"), ("/jobs/{jobid}", f"/jobs/{running}"),
                               ("/jobs/{jobid}/vertices/{vertexid}", f"/jobs/{running}/vertices/{vertex}"),
                               ("/jobs/{jobid}/vertices/{vertexid}/metrics",
                                f"/jobs/{running}/vertices/{vertex}/metrics?get=0.slow_map.numRecordsIn"),
                               ("/jobs/{jobid}/vertices/{vertexid}/subtasks/metrics",
                                f"/jobs/{running}/vertices/{vertex}/subtasks/metrics?get=slow_map.numRecordsIn"),
                               ("/jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/metrics",
                                f"/jobs/{running}/vertices/{vertex}/subtasks/1/metrics"),
                               ("/jobs/{jobid}/exceptions", f"/jobs/{done}/exceptions"),
                               ("/jobs/{jobid}/execution-result", f"/jobs/{done}/execution-result"),
                               ("/jobs/{jobid}/execution-result", f"/jobs/{running}/execution-result"),
                               ("/taskmanagers", "/taskmanagers"), ("/taskmanagers/{tmid}", f"/taskmanagers/{tm}")]:
            status, body = call(c.rest, "GET", concrete)
            assert status == 200, (concrete, body)
            check(spec, path, "get", status, body)
        for concrete, path in [("/jobs/nope", "/jobs/{jobid}"), ("/taskmanagers/nope", "/taskmanagers/{tmid}")]:
            status, body = call(c.rest, "GET", concrete)
            assert status == 404
            check(spec, path, "get", 404, body)
        status, body = call(c.rest, "POST", "/jobs", {"topology": {}, "jobgraph": "!!"})
        assert status == 400
        check(spec, "/jobs", "post", 400, body)
        status, body = call(c.rest, "PATCH", f"/jobs/{running}?mode=stop")
        assert status == 400
        status, body = call(c.rest, "PATCH", f"/jobs/{running}?mode=cancel")
        assert status == 202
        check(spec, "/jobs/{jobid}", "patch", 202, body)
        wait_for(lambda: call(c.rest, "GET", f"/jobs/{running}")[1]["state"] == "CANCELED", what="cancel")
        status, body = call(c.rest, "GET", f"/jobs/{running}/execution-result")
        assert body["job-execution-result"]["application-status"] == "CANCELED"
    finally:
        assert not c.stop()
