"""A YARN session's dashboard, REST API and Prometheus endpoint as a user reaches them, on a real
YARN (Hadoop's MiniYARNCluster): the ResourceManager's web proxy (the application's tracking URL),
skein's web UI behind it, the login link, the Prometheus address.

The MiniYARNCluster runs without Kerberos, like EMR without a security configuration: its
ResourceManager calls every web user ``hadoop.http.staticuser.user`` (``dr.who``), and skein's UI
ACLs (on for every emrflow application: skein's UI shows the key-value store with the REST token)
admit only the application's owner. So through the proxy an anonymous browser gets 403 here. What
the proxy sends to the ApplicationMaster for an authenticated owner (a Kerberos cluster) is a
request from the proxy's host with the cookie ``proxy-user=<owner>`` and none of the browser's
cookies or ``Authorization``; the test sends exactly that to skein's UI.
"""

from __future__ import annotations

import glob
import http.cookiejar
import json
import os
import re
import urllib.error
import urllib.request

import pytest

from tests.yarn.test_yarn_targets import SMALL, app_id_of, cli, wait_for, yenv  # noqa: F401 - yenv: a fixture (skein_client, yarn_apps: tests/yarn/conftest.py)

pytestmark = [pytest.mark.yarn, pytest.mark.integration]


def fetch(url, headers=None, opener=None):
    """(status, body text) of a GET; HTTP errors are answers too, redirects are not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = opener or urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(errors="replace")


def skein_ui_address(yarn_cluster, app_id: str) -> str:
    """host:port of skein's web UI in the ApplicationMaster, from its log (the tracking URL YARN
    reports is the proxy's)."""
    def find():
        for path in glob.glob(os.path.join(yarn_cluster.work_dir, "**", app_id, "container_*",
                                           "application.master.log"), recursive=True):
            with open(path, errors="replace") as f:
                m = re.search(r"WebUI server started at (\S+):(\d+)", f.read())
            if m:
                return f"{m.group(1)}:{m.group(2)}"
        return None
    return wait_for(find, 60, "skein's web UI address in application.master.log")


def test_dashboard_and_metrics_of_a_session(yarn_cluster, yarn_apps, yenv, skein_client):  # noqa: F811
    out = cli("yarn-session", "start", "-d", "-n", "1", "-s", "2", *SMALL,
              "-D", "metrics.reporter.prom.port=0", env=yenv).stdout
    app_id = app_id_of(out)
    yarn_apps.append(app_id)
    rest = out.split("http://")[1].split("/")[0]
    owner = skein_client.application_report(app_id).user

    # what start prints: the dashboard through the web proxy, a login link, the metrics address
    proxy_base = f"http://{yarn_cluster.web_address}/proxy/{app_id}/"
    assert f"Dashboard through YARN's web proxy (the application's owner only): {proxy_base}pages/emrflow/" in out
    link = re.search(r"Dashboard login link \(valid until [^)]*\): (\S+)", out).group(1)
    assert link.startswith(f"http://{rest}/login?expires=")
    prom = re.search(r"Prometheus metrics at http://(\S+)/metrics \(also (\S+)\)", out)
    assert prom.group(2) == f"{proxy_base}pages/metrics"
    prom = prom.group(1)
    assert prom.split(":")[0] == rest.split(":")[0] and prom != rest

    # the web proxy, as the anonymous web user of a cluster without Kerberos: skein's UI ACLs refuse
    for page in ("", "pages/emrflow/", "pages/emrflow/overview", "pages/metrics"):
        status, body = fetch(proxy_base + page)
        assert status == 403 and "User is not authorized" in body, (page, status, body[:300])

    # the request the proxy makes for the authenticated owner: skein's UI passes it on to the
    # JobManager, which needs no token on the page's target; another user is refused
    ui = skein_ui_address(yarn_cluster, app_id)
    as_owner = {"Cookie": f"proxy-user={owner}"}
    status, body = fetch(f"http://{ui}/pages/emrflow/", as_owner)
    assert status == 200 and "emrflow dashboard" in body, (status, body[:300])
    overview = wait_for(lambda: (ov := json.loads(fetch(f"http://{ui}/pages/emrflow/overview", as_owner)[1]))
                        ["slots-total"] == 2 and ov, 120, "the TaskManager's slots")
    assert overview["taskmanagers"] == 1 and overview["slots-available"] == 2
    status, body = fetch(f"http://{ui}/pages/metrics", as_owner)
    assert status == 200 and "flink_jobmanager_taskSlotsAvailable 2.0" in body
    assert fetch(f"http://{ui}/pages/emrflow/overview", {"Cookie": "proxy-user=mallory"})[0] == 403
    # the page's target is not the REST API's root: without the proxy path the token is needed
    assert fetch(f"http://{rest}/overview")[0] == 401

    # directly (an SSH tunnel, a SOCKS proxy, inside the VPC): the login link gives a browser a cookie
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    status, body = fetch(link, opener=browser)
    assert status == 200 and 'url=./' in body
    assert [c.name for c in jar] == ["emrflow_session"]
    status, body = fetch(f"http://{rest}/", opener=browser)
    assert status == 200 and "emrflow dashboard" in body
    status, body = fetch(f"http://{rest}/overview", opener=browser)
    assert status == 200 and json.loads(body)["slots-total"] == 2
    tampered = link[:-1] + ("0" if link[-1] != "0" else "1")
    assert fetch(tampered)[0] == 401

    # Prometheus scrapes the published address directly
    status, body = fetch(f"http://{prom}/metrics")
    assert status == 200 and "flink_jobmanager_taskSlotsAvailable 2.0" in body

    # command-line clients pass the token (from the key-value store, the owner's) with -D
    token = yarn_apps.kv(app_id)["emrflow.rest.token"].decode()
    proc = cli("list", "-a", "-m", rest, env=yenv, check=False)
    assert proc.returncode == 1 and "401" in proc.stderr, proc.stderr
    proc = cli("list", "-a", "-m", rest, "-D", f"rest.auth.token={token}", env=yenv)
    assert "No jobs." in proc.stderr

    status_out = cli("yarn-session", "status", env=yenv).stdout
    assert f"Prometheus metrics at http://{prom}/metrics" in status_out
    assert re.search(rf"Dashboard login link \(valid until [^)]*\): http://{re.escape(rest)}/login\?", status_out)

    out = cli("yarn-session", "stop", env=yenv).stdout
    assert f"Stopped YARN session {app_id}" in out
