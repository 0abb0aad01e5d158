"""The JobManager's REST API and web dashboard, on Flink's paths with Flink's JSON shapes.

Served by Flask on waitress in a thread of the JobManager process. Endpoints
(documented in ``docs/rest-api.yaml``):

* ``GET /config``, ``/overview``, ``/jobs``, ``/jobs/overview``, ``/jobs/{jobid}``,
  ``/jobs/{jobid}/vertices/{vertexid}``, ``/jobs/{jobid}/exceptions``,
  ``/jobs/{jobid}/execution-result``, ``/taskmanagers``, ``/taskmanagers/{tmid}``: as Flink's;
* ``PATCH /jobs/{jobid}?mode=cancel``: cancel a job (Flink's);
* ``POST /jobs/{jobid}/savepoints``, ``POST /jobs/{jobid}/stop``,
  ``GET /jobs/{jobid}/savepoints/{triggerid}``: trigger a savepoint (and stop), follow it (Flink's);
* ``GET /jobs/{jobid}/checkpoints``: checkpoint counts and the latest completed one (Flink's);
* ``GET /jobs/{jobid}/vertices/{vertexid}/metrics``, ``.../subtasks/metrics`` (aggregated over
  subtasks: ``agg=min,max,avg,sum``, ``subtasks=0,2-3``) and ``.../subtasks/{index}/metrics``: the
  operators' metrics, ``numRecordsIn``/``numRecordsOut`` and those connectors register
  (:mod:`emrflow.connectors.metric_group`), listed without ``get``, with values for ``get=id,id``
  (Flink's);
* ``POST /jobs``: submit a job (emrflow's own: a JSON body with the job's topology and
  its base64 cloudpickled JobGraph, which only the TaskManagers unpickle);
* ``DELETE /cluster``: shut the cluster down (Flink's);
* ``GET /``: the dashboard.

Security: the server binds ``rest.bind-address`` (127.0.0.1 by default). If a token
is configured (``rest.auth.token``, passed as ``EMRFLOW_REST_TOKEN``), every request
must carry ``Authorization: Bearer <token>`` or gets 401 before anything runs;
binding another address without a token is refused at start. Two more ways in, both
derived from the token, for browsers:

* ``GET /login?expires=...&signature=...`` (a link made by :func:`login_link`, signed
  with the token, valid until ``expires``) sets an HttpOnly, SameSite=Strict session
  cookie that authenticates later requests, and sends the browser on to the dashboard;
* any request carrying a valid, unexpired ``?expires=...&signature=...`` pair is
  authenticated by it: the way through YARN's web proxy, which forwards a request's query
  but neither ``Authorization`` nor cookies. The dashboard, opened with the pair, adds it to
  every request it makes (see ``docs/yarn.md``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
import time
import uuid
from typing import Any

from emrflow import __version__
from emrflow.api.eventtime import MIN_WATERMARK
from emrflow.runtime.jobmanager.errors import JobManagerError, JobNotFound
from emrflow.runtime.jobmanager.states import TERMINAL, ExecutionState, JobStatus

#: Largest request body accepted (a submitted JobGraph), in bytes.
MAX_BODY_BYTES = 256 * 1024 * 1024
#: Name of the cookie a login link sets.
SESSION_COOKIE = "emrflow_session"
#: How long a login link made by :func:`login_link` stays valid by default, in seconds.
LOGIN_LINK_VALIDITY_S = 12 * 3600


def _derived(token: str, purpose: str) -> str:
    """A value only the token's holder can compute: HMAC-SHA256 of ``purpose`` keyed with it."""
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def signed_link_valid(token: str, expires: str, signature: str, now_s: float | None = None) -> bool:
    """True if ``signature`` is the token's signature of ``expires`` (epoch seconds, not past).

    Args:
        token: The server's ``rest.auth.token``.
        expires: The link's ``expires`` parameter.
        signature: The link's ``signature`` parameter (hex).
        now_s: The current time in seconds since the epoch (default: now).
    """
    return (expires.isdigit() and int(expires) >= (time.time() if now_s is None else now_s)
            and hmac.compare_digest(signature.encode(), _derived(token, f"login:{expires}").encode()))


def signed_query(token: str, valid_s: float = LOGIN_LINK_VALIDITY_S, now_s: float | None = None) -> str:
    """The ``expires=<epoch seconds>&signature=<hex>`` pair of a link valid for ``valid_s`` seconds."""
    expires = int((time.time() if now_s is None else now_s) + valid_s)
    return f"expires={expires}&signature={_derived(token, f'login:{expires}')}"


def login_link(base_url: str, token: str, valid_s: float = LOGIN_LINK_VALIDITY_S,
               now_s: float | None = None) -> str:
    """Return a link that logs a browser in to the dashboard at ``base_url``.

    The link carries no token, only its expiry and an HMAC-SHA256 signature made with the
    token; the server answers it with a session cookie (see the module docstring).

    Args:
        base_url: The REST server's address as the browser reaches it, e.g.
            ``http://host:8081``.
        token: The server's ``rest.auth.token``.
        valid_s: Seconds the link stays valid from ``now_s``.
        now_s: The current time in seconds since the epoch (default: now).

    Returns:
        ``<base_url>/login?expires=<epoch seconds>&signature=<hex>``.
    """
    return f"{base_url.rstrip('/')}/login?{signed_query(token, valid_s, now_s)}"


_TASK_STATES = [s.value for s in ExecutionState]


def _ms(t: float | None) -> int:
    return int(t * 1000) if t else -1


def _job_duration_ms(job) -> int:
    start = job.start or job.submitted
    return int(((job.end or time.time()) - start) * 1000)


def _task_counts(states: list[str]) -> dict[str, int]:
    counts = {s: 0 for s in _TASK_STATES}
    for s in states:
        counts[s if s in counts else ExecutionState.RUNNING] += 1
    return counts


def _vertex_status(states: list[str]) -> str:
    X = ExecutionState
    if any(s == X.FAILED for s in states):
        return X.FAILED.value
    if all(s == X.FINISHED for s in states):
        return X.FINISHED.value
    if any(s == X.CANCELED for s in states) and all(s in (X.CANCELED, X.FINISHED) for s in states):
        return X.CANCELED.value
    if any(s == X.RUNNING for s in states):
        return X.RUNNING.value
    return X.DEPLOYING.value


def job_overview(jm, job) -> dict:
    """Flink's ``/jobs/overview`` entry for a job (``job``: a :class:`~emrflow.runtime.jobmanager.query.JobView`)."""
    states = [str(s) for s in job.tasks.values()]
    return {"jid": job.id, "name": job.name, "state": job.state.rest_name,
            "start-time": _ms(job.start or job.submitted), "end-time": _ms(job.end),
            "duration": _job_duration_ms(job), "last-modification": _ms(job.end or time.time()),
            "tasks": {k.lower(): v for k, v in _task_counts(states).items()} | {"total": len(states)}}


def _subtask_metrics(job, vid: int, i: int, head_id: int, tail_id: int) -> dict:
    m = job.metrics.get((vid, i), {})
    r = job.rates.get((vid, i), {})
    ops = m.get("operators", {})
    rates = r.get("operators", {})
    rin = ops.get(head_id, (0, 0))[0]
    rout = ops.get(tail_id, (0, 0))[1]
    return {"read-bytes": 0, "read-bytes-complete": True, "write-bytes": 0, "write-bytes-complete": True,
            "read-records": rin, "read-records-complete": True,
            "write-records": rout, "write-records-complete": True,
            "records-in-per-second": rates.get(head_id, (0.0, 0.0))[0],
            "records-out-per-second": rates.get(tail_id, (0.0, 0.0))[1],
            "accumulated-busy-time": int(m.get("busy_s", 0) * 1000),
            "accumulated-backpressured-time": int(m.get("backpressured_s", 0) * 1000),
            "busy-time-ms-per-second": r.get("busy_ms_per_s", 0.0),
            "backpressured-time-ms-per-second": r.get("backpressured_ms_per_s", 0.0),
            "current-input-watermark": m.get("watermark", MIN_WATERMARK),
            "numLateRecordsDropped": sum(m.get("late", {}).values())}


def _sum_metrics(parts: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for p in parts:
        for k, v in p.items():
            if k == "current-input-watermark":  # a vertex is as far as its slowest subtask
                out[k] = min(out.get(k, v), v)
            else:
                out[k] = v if isinstance(v, bool) else out.get(k, 0) + v
    return out


def job_details(jm, job) -> dict:
    """Flink's ``/jobs/{jobid}`` (``job``: a :class:`~emrflow.runtime.jobmanager.query.JobView`)."""
    vertices, plan_nodes = [], []
    edges_in: dict[int, list] = {}
    for e in job.topology["edges"]:
        edges_in.setdefault(e["target"], []).append(e)
    for v in job.topology["vertices"]:
        states = [str(job.tasks.get((v["id"], i), ExecutionState.CREATED)) for i in range(v["parallelism"])]
        head, tail = v["operators"][0]["id"], v["operators"][-1]["id"]
        metrics = _sum_metrics([_subtask_metrics(job, v["id"], i, head, tail)
                                for i in range(v["parallelism"])])
        vertices.append({"id": str(v["id"]), "name": v["name"], "maxParallelism": v["max_parallelism"],
                         "parallelism": v["parallelism"], "status": _vertex_status(states),
                         "start-time": _ms(job.start), "end-time": _ms(job.end),
                         "duration": _job_duration_ms(job), "tasks": _task_counts(states),
                         "metrics": metrics,
                         "operators": [{"id": str(o["id"]), "name": o["name"], "uid": o["uid"],
                                        "records-in": sum(job.metrics.get((v["id"], i), {}).get(
                                            "operators", {}).get(o["id"], (0, 0))[0]
                                            for i in range(v["parallelism"])),
                                        "records-out": sum(job.metrics.get((v["id"], i), {}).get(
                                            "operators", {}).get(o["id"], (0, 0))[1]
                                            for i in range(v["parallelism"]))}
                                       for o in v["operators"]]})
        plan_nodes.append({"id": str(v["id"]), "parallelism": v["parallelism"], "operator": "",
                           "operator_strategy": "", "description": v["name"],
                           "inputs": [{"num": n, "id": str(e["source"]), "ship_strategy": e["ship_strategy"],
                                       "exchange": "pipelined_bounded",
                                       "local_strategy": "LOCAL_AGGREGATION" if e["local_aggregation"] else ""}
                                      for n, e in enumerate(edges_in.get(v["id"], []))]})
    status_counts = _task_counts([str(s) for s in job.tasks.values()])
    return {"jid": job.id, "name": job.name, "isStoppable": False,
            "state": job.state.rest_name,
            "job-type": "BATCH" if job.topology["batch"] else "STREAMING",
            "start-time": _ms(job.start or job.submitted), "end-time": _ms(job.end),
            "duration": _job_duration_ms(job), "maxParallelism": -1, "now": _ms(time.time()),
            "timestamps": {JobStatus.CREATED: _ms(job.submitted), JobStatus.RUNNING: _ms(job.start),
                           job.state.rest_name: _ms(job.end or time.time())},
            "vertices": vertices, "status-counts": status_counts,
            "plan": {"jid": job.id, "name": job.name, "type": "BATCH" if job.topology["batch"] else "STREAMING",
                     "nodes": plan_nodes}}


def vertex_details(jm, job, vertex: dict) -> dict:
    """Flink's ``/jobs/{jobid}/vertices/{vertexid}`` (``job``: a :class:`~emrflow.runtime.jobmanager.query.JobView`)."""
    head, tail = vertex["operators"][0]["id"], vertex["operators"][-1]["id"]
    subtasks = []
    for i in range(vertex["parallelism"]):
        slot = job.slots[i] if i < len(job.slots) else None
        subtasks.append({"subtask": i, "status": str(job.tasks.get((vertex["id"], i), ExecutionState.CREATED)),
                         "attempt": 0, "host": slot.data_address[0] if slot else "",
                         "taskmanager-id": slot.taskmanager_id if slot else "",
                         "start-time": _ms(job.start), "end-time": _ms(job.end),
                         "duration": _job_duration_ms(job),
                         "metrics": _subtask_metrics(job, vertex["id"], i, head, tail)})
    return {"id": str(vertex["id"]), "name": vertex["name"], "parallelism": vertex["parallelism"],
            "maxParallelism": vertex["max_parallelism"], "now": _ms(time.time()), "subtasks": subtasks}


#: Flink's MetricQueryService replaces these characters of an operator's name in metric ids
_METRIC_ID_INVALID = re.compile(r"[ .:,]")
_AGGREGATES = ("min", "max", "avg", "sum")


def operator_metrics(job, vertex: dict, i: int) -> dict[str, Any]:
    """Subtask ``i``'s operator metrics as Flink's REST ids: ``<operator>.<metric>`` to value.

    Every operator of the chain has ``numRecordsIn`` and ``numRecordsOut``; a source reader or sink
    writer adds what it registered on its metric group (:mod:`emrflow.connectors.metric_group`).
    """
    m = job.metrics.get((vertex["id"], i), {})
    out: dict[str, Any] = {}
    for o in vertex["operators"]:
        name = _METRIC_ID_INVALID.sub("_", o["name"])
        out[f"{name}.numRecordsIn"], out[f"{name}.numRecordsOut"] = m.get("operators", {}).get(o["id"], (0, 0))
        for rest_id, _prom, _labels, value in m.get("connector", {}).get(o["id"], ()):
            out[f"{name}.{rest_id}"] = value
    return out


def metric_values(values: dict[str, Any], get: str | None) -> list[dict]:
    """Flink's answer to ``.../metrics[?get=a,b]``: the ids, or the requested ones with their values (strings)."""
    if get is None:
        return [{"id": k} for k in values]
    return [{"id": k, "value": str(values[k])} for k in get.split(",") if k in values]


def aggregated_metrics(per_subtask: list[dict[str, Any]], get: str | None, agg: str | None) -> list[dict]:
    """Flink's ``.../subtasks/metrics[?get=a,b&agg=min,max,avg,sum]``: each metric over the subtasks."""
    ids = list(dict.fromkeys(k for values in per_subtask for k in values))
    if get is None:
        return [{"id": k} for k in ids]
    wanted = [a for a in (agg or ",".join(_AGGREGATES)).split(",") if a in _AGGREGATES]
    out = []
    for k in get.split(","):
        xs = [values[k] for values in per_subtask
              if isinstance(values.get(k), (int, float)) and not isinstance(values.get(k), bool)]
        if xs:
            stats = {"min": min(xs), "max": max(xs), "avg": sum(xs) / len(xs), "sum": sum(xs)}
            out.append({"id": k, **{a: stats[a] for a in wanted}})
    return out


def _subtask_list(text: str | None, parallelism: int) -> list[int]:
    """Flink's ``subtasks`` parameter (``0,2-3``); every subtask if absent.

    Raises:
        ValueError: not a list of indices and ranges.
    """
    if not text:
        return list(range(parallelism))
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return [i for i in dict.fromkeys(out) if 0 <= i < parallelism]


def job_exceptions(jm, job) -> dict:
    """Flink's ``/jobs/{jobid}/exceptions`` (``job``: a :class:`~emrflow.runtime.jobmanager.query.JobView`)."""
    f = job.failure
    if not f:
        return {"root-exception": None, "timestamp": None, "all-exceptions": [], "truncated": False,
                "exceptionHistory": {"entries": [], "truncated": False}}
    text = f.get("message", "") + ("\n" + f["traceback"] if f.get("traceback") else "")
    entry = {"exceptionName": f.get("message", "").split(":")[0], "stacktrace": text,
             "timestamp": _ms(job.failure_time), "taskName": f.get("task") or f.get("operator"),
             "endpoint": None, "taskManagerId": None, "failureLabels": {},
             "concurrentExceptions": []}
    return {"root-exception": text, "timestamp": _ms(job.failure_time),
            "all-exceptions": [{"exception": text, "task": f.get("task") or f.get("operator"),
                                "location": None, "timestamp": _ms(job.failure_time)}],
            "truncated": False, "exceptionHistory": {"entries": [entry], "truncated": False}}


def taskmanager_info(jm, tm) -> dict:
    """Flink's ``/taskmanagers`` entry (``tm``: a :class:`~emrflow.runtime.jobmanager.query.TaskManagerView`)."""
    slots = tm.slot_views
    return {"id": tm.id, "path": f"emrflow://{tm.host}/{tm.id}", "dataPort": -1,
            "jmxPort": -1, "timeSinceLastHeartbeat": _ms(time.time() - (time.monotonic() - tm.last_heartbeat)),
            "slotsNumber": tm.slots, "freeSlots": sum(1 for s in slots if s.job_id is None),
            "totalResource": {"cpuCores": float(os.cpu_count() or 1)},
            "hardware": {"cpuCores": os.cpu_count() or 1, "physicalMemory": -1, "freeMemory": -1,
                         "managedMemory": -1},
            "memoryConfiguration": {}, "blocked": False,
            "metrics": {"rssBytes": tm.rss_bytes, "cpuPercent": tm.cpu_percent},
            "slots": [{"index": s.index, "job": s.job_id} for s in sorted(slots, key=lambda s: s.index)],
            "pid": tm.pid}


def create_app(jm, token: str | None = None):
    """Return the Flask application serving ``jm`` (a :class:`~emrflow.runtime.jobmanager.JobManager`)."""
    from flask import Flask, Response, abort, jsonify, request

    app = Flask("emrflow", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    session_value = _derived(token, "session") if token else ""

    @app.before_request
    def check_token():
        if token is None or request.path == "/login":
            return None
        given = request.headers.get("Authorization", "")
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not (hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
                or hmac.compare_digest(cookie.encode(), session_value.encode())
                or signed_link_valid(token, request.args.get("expires", ""), request.args.get("signature", ""))):
            return jsonify(errors=["missing or wrong bearer token or login cookie (a browser opens the "
                                   "login link `emrflow yarn-session start` or `status` prints)"]), 401
        return None

    @app.get("/login")
    def login():
        if token is not None:
            expires, signature = request.args.get("expires", ""), request.args.get("signature", "")
            if not expires.isdigit() or not hmac.compare_digest(
                    signature.encode(), _derived(token, f"login:{expires}").encode()):
                return jsonify(errors=["not a valid login link: expected ?expires=<epoch seconds>"
                                       "&signature=<hex> as made by the CLI"]), 401
            if int(expires) < time.time():
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(expires)))
                return jsonify(errors=[f"this login link expired at {when}; "
                                       "`emrflow yarn-session status` prints a new one"]), 401
        # a page of our own moves on, not a redirect: a SameSite=Strict cookie set during a
        # cross-site navigation (a link clicked in a terminal or a mail) would not be sent on it
        resp = Response('<!doctype html><meta http-equiv="refresh" content="0; url=./">'
                        '<a href="./">Open the dashboard</a>', mimetype="text/html")
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if token is not None:
            resp.set_cookie(SESSION_COOKIE, session_value, httponly=True, samesite="Strict",
                            secure=request.scheme == "https")
        return resp

    @app.errorhandler(404)
    def not_found(_e):
        return jsonify(errors=["Not found: " + request.path]), 404

    @app.errorhandler(405)
    def bad_method(_e):
        return jsonify(errors=[f"{request.method} is not allowed on {request.path}"]), 405

    @app.errorhandler(413)
    def too_big(_e):
        return jsonify(errors=[f"request body larger than {MAX_BODY_BYTES} bytes"]), 413

    def find_job(jobid: str):
        job = jm.query.find_job(jobid)
        if job is None:
            abort(404)
        return job

    @app.get("/")
    def dashboard():
        from importlib.resources import files
        html = files("emrflow.runtime").joinpath("dashboard.html").read_text(encoding="utf-8")
        resp = Response(html, mimetype="text/html")
        resp.headers["Referrer-Policy"] = "no-referrer"  # a signed link's query stays on this page
        return resp

    @app.get("/config")
    def config():
        return jsonify({"refresh-interval": 1000, "timezone-name": time.tzname[0],
                        "timezone-offset": -time.timezone * 1000, "flink-version": f"emrflow {__version__}",
                        "flink-revision": "emrflow", "features": {"web-submit": False,
                                                                  "web-cancel": True,
                                                                  "web-history": False}})

    @app.get("/overview")
    def overview():
        o = jm.query.overview()
        states = list(o.job_states)
        return jsonify({"taskmanagers": o.taskmanagers, "slots-total": o.slots_total,
                        "slots-available": o.slots_available,
                        "jobs-running": sum(1 for s in states if s not in TERMINAL),
                        "jobs-finished": states.count(JobStatus.FINISHED),
                        "jobs-cancelled": states.count(JobStatus.CANCELED),
                        "jobs-failed": states.count(JobStatus.FAILED),
                        "flink-version": f"emrflow {__version__}", "flink-commit": "emrflow"})

    @app.get("/jobs")
    def jobs():
        return jsonify({"jobs": [{"id": j.id, "status": j.state.rest_name} for j in jm.query.jobs()]})

    @app.post("/jobs")
    def submit():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("topology"), dict) \
                or not isinstance(body.get("jobgraph"), str):
            return jsonify(errors=["expected a JSON object with 'topology' (object) and "
                                   "'jobgraph' (base64 of the cloudpickled JobGraph)"]), 400
        topo = body["topology"]
        try:
            job_bytes = base64.b64decode(body["jobgraph"], validate=True)
            if not (isinstance(topo.get("job_id"), str) and isinstance(topo.get("name"), str)
                    and topo.get("vertices") and all(int(v["parallelism"]) >= 1 for v in topo["vertices"])):
                raise ValueError("topology needs job_id, name and vertices with a parallelism")
        except (binascii.Error, ValueError, TypeError, KeyError) as exc:
            return jsonify(errors=[f"malformed job: {exc}"]), 400
        try:
            reply = jm.submit(topology=topo, job_bytes=job_bytes)
        except JobManagerError as exc:
            return jsonify(errors=[str(exc)]), 409
        return jsonify({"jobid": reply["job_id"]}), 202

    @app.get("/jobs/overview")
    def jobs_overview():
        return jsonify({"jobs": [job_overview(jm, j) for j in
                                 sorted(jm.query.jobs(), key=lambda j: j.submitted, reverse=True)]})

    @app.get("/jobs/<jobid>")
    def job(jobid):
        return jsonify(job_details(jm, find_job(jobid)))

    @app.patch("/jobs/<jobid>")
    def cancel(jobid):
        mode = request.args.get("mode", "cancel")
        if mode != "cancel":
            return jsonify(errors=[f"unsupported mode {mode!r}; only 'cancel'"]), 400
        try:
            jm.cancel(jobid)
        except JobManagerError as exc:
            return jsonify(errors=[str(exc)]), 404
        return jsonify({}), 202

    savepoints: dict[str, dict] = {}

    def _run_savepoint(trigger_id: str, jobid: str, directory: str | None, stop: bool) -> None:
        try:
            reply = (jm.stop if stop else jm.savepoint)(jobid, directory)
        except JobManagerError as exc:
            savepoints[trigger_id] = {"failure-cause": {"class": "SavepointError", "stack-trace": str(exc)}}
        else:
            savepoints[trigger_id] = {"location": reply["path"]}

    def _trigger_savepoint(jobid: str, directory: Any, stop: bool):
        find_job(jobid)
        if directory is not None and not isinstance(directory, str):
            return jsonify(errors=["the target directory must be a string"]), 400
        trigger_id = uuid.uuid4().hex
        savepoints[trigger_id] = {}
        threading.Thread(target=_run_savepoint, args=(trigger_id, jobid, directory, stop),
                         daemon=True, name=f"savepoint-{trigger_id[:8]}").start()
        return jsonify({"request-id": trigger_id}), 202

    @app.post("/jobs/<jobid>/savepoints")
    def trigger_savepoint(jobid):
        body = request.get_json(silent=True) or {}
        return _trigger_savepoint(jobid, body.get("target-directory"), bool(body.get("cancel-job")))

    @app.post("/jobs/<jobid>/stop")
    def stop_with_savepoint(jobid):
        body = request.get_json(silent=True) or {}
        return _trigger_savepoint(jobid, body.get("targetDirectory"), True)

    @app.get("/jobs/<jobid>/savepoints/<triggerid>")
    def savepoint_status(jobid, triggerid):
        op = savepoints.get(triggerid)
        if op is None:
            return jsonify(errors=[f"no savepoint operation {triggerid}"]), 404
        if not op:
            return jsonify({"status": {"id": "IN_PROGRESS"}})
        return jsonify({"status": {"id": "COMPLETED"}, "operation": op})

    @app.get("/jobs/<jobid>/checkpoints")
    def checkpoints(jobid):
        job = find_job(jobid)
        c = job.checkpoints
        if c is None:
            return jsonify(errors=[f"job {jobid} takes no checkpoints (BATCH mode)"]), 404

        def stats(last: dict | None) -> dict | None:
            return None if last is None else {
                "id": last["checkpoint_id"], "is_savepoint": last["kind"] == "savepoint",
                "latest_ack_timestamp": last["timestamp_ms"], "state_size": last["size_bytes"],
                "end_to_end_duration": last["duration_ms"], "external_path": last["path"]}
        return jsonify({
            "counts": {"completed": c.completed, "failed": c.failed,
                       "in_progress": c.in_progress, "restored": job.restarts,
                       "total": c.completed + c.failed + c.in_progress},
            "latest": {"completed": stats(c.latest), "savepoint": stats(c.latest_savepoint)},
            "summary": {"directory": c.directory}})

    def find_vertex(jobid: str, vertexid: str):
        job = find_job(jobid)
        for v in job.topology["vertices"]:
            if str(v["id"]) == vertexid:
                return job, v
        abort(404)

    @app.get("/jobs/<jobid>/vertices/<vertexid>")
    def vertex(jobid, vertexid):
        return jsonify(vertex_details(jm, *find_vertex(jobid, vertexid)))

    @app.get("/jobs/<jobid>/vertices/<vertexid>/metrics")
    def vertex_metrics(jobid, vertexid):
        job, v = find_vertex(jobid, vertexid)
        values = {f"{i}.{k}": x for i in range(v["parallelism"]) for k, x in operator_metrics(job, v, i).items()}
        return jsonify(metric_values(values, request.args.get("get")))

    @app.get("/jobs/<jobid>/vertices/<vertexid>/subtasks/metrics")
    def subtasks_metrics(jobid, vertexid):
        job, v = find_vertex(jobid, vertexid)
        try:
            subtasks = _subtask_list(request.args.get("subtasks"), v["parallelism"])
        except ValueError:
            return jsonify(errors=["subtasks must be a list of subtask indices and ranges, e.g. 0,2-3"]), 400
        return jsonify(aggregated_metrics([operator_metrics(job, v, i) for i in subtasks],
                                          request.args.get("get"), request.args.get("agg")))

    @app.get("/jobs/<jobid>/vertices/<vertexid>/subtasks/<int:subtaskindex>/metrics")
    def subtask_metrics(jobid, vertexid, subtaskindex):
        job, v = find_vertex(jobid, vertexid)
        if subtaskindex >= v["parallelism"]:
            abort(404)
        return jsonify(metric_values(operator_metrics(job, v, subtaskindex), request.args.get("get")))

    @app.get("/jobs/<jobid>/exceptions")
    def exceptions(jobid):
        return jsonify(job_exceptions(jm, find_job(jobid)))

    @app.get("/jobs/<jobid>/execution-result")
    def execution_result(jobid):
        try:
            wait_s = min(float(request.args.get("wait", "0")), 30.0)
        except ValueError:
            return jsonify(errors=["wait must be a number of seconds"]), 400
        try:
            status = jm.job_status(jobid, wait_s=wait_s)
        except JobNotFound:
            abort(404)
        done = status["state"] in TERMINAL
        out: dict[str, Any] = {"status": {"id": "COMPLETED" if done else "IN_PROGRESS"},
                               "emrflow-status": status}
        if done:
            app_status = {JobStatus.FINISHED: "SUCCEEDED", JobStatus.FAILED: "FAILED",
                          JobStatus.CANCELED: "CANCELED"}[status["state"]]
            result: dict[str, Any] = {"id": jobid, "application-status": app_status,
                                      "accumulator-results": {}, "net-runtime": status["duration_ms"]}
            if status.get("failure"):
                f = status["failure"]
                result["failure-cause"] = {"class": f.get("message", "").split(":")[0],
                                           "stack-trace": f.get("traceback", ""),
                                           "serialized-throwable": ""}
            out["job-execution-result"] = result
        return jsonify(out)

    @app.get("/taskmanagers")
    def taskmanagers():
        return jsonify({"taskmanagers": [taskmanager_info(jm, tm) for tm in jm.query.taskmanagers()]})

    @app.get("/taskmanagers/<tmid>")
    def taskmanager(tmid):
        tm = jm.query.taskmanager(tmid)
        if tm is None:
            abort(404)
        return jsonify(taskmanager_info(jm, tm))

    @app.delete("/cluster")
    def shutdown():
        # answer first; the JobManager process ends right after shutting down
        threading.Timer(0.2, jm.shutdown).start()
        return jsonify({}), 202

    return app


def start_rest_server(jm, host: str, port: int, token: str | None) -> tuple[str, int]:
    """Serve the REST API in a daemon thread; returns the bound ``(host, port)``.

    Raises:
        ValueError: a non-loopback address without a token.
    """
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise ValueError(f"refusing to serve the REST API on {host} without rest.auth.token: "
                         "anyone who can reach it could run code on this cluster")
    from waitress import create_server
    server = create_server(create_app(jm, token), host=host, port=port, threads=8,
                           max_request_body_size=MAX_BODY_BYTES + 1024, ident="emrflow")
    bound = (host, int(server.effective_port))
    threading.Thread(target=server.run, daemon=True, name="rest").start()
    return bound


