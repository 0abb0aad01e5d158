"""A YARN session's dashboard, REST API and Prometheus endpoint as a user reaches them, on a real
YARN (Hadoop's MiniYARNCluster): the ResourceManager's web proxy (the application's tracking URL),
skein's web UI behind it, the signed link, the login link, the Prometheus address.

The MiniYARNCluster runs without Kerberos, like EMR without a security configuration: its
ResourceManager calls every web user ``hadoop.http.staticuser.user`` (``dr.who``), and the proxy
forwards a request's query but none of the browser's cookies and no ``Authorization``. skein's UI
admits every web user (``yarn.application.web-ui.users`` ``*``) and shows neither the cluster
secret nor the REST token; the dashboard behind it wants the signed link's query on every request.
A real Chromium opens the link through the proxy.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.request

import pytest

from tests.integration.test_dashboard import browser, text_of  # noqa: F401 - browser: a fixture
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


def test_dashboard_and_metrics_of_a_session(yarn_cluster, yarn_apps, yenv, skein_client, browser):  # noqa: F811
    out = cli("yarn-session", "start", "-d", "-n", "1", "-s", "2", *SMALL,
              "-D", "metrics.reporter.prom.port=0", env=yenv).stdout
    app_id = app_id_of(out)
    yarn_apps.append(app_id)
    rest = out.split("http://")[1].split("/")[0]

    # what start prints: the dashboard through the web proxy (signed), a login link, the metrics address
    proxy_base = f"http://{yarn_cluster.web_address}/proxy/{app_id}/"
    signed = re.search(r"Dashboard through YARN's web proxy \(valid until [^)]*\): (\S+)", out).group(1)
    assert signed.startswith(f"{proxy_base}pages/emrflow/?expires=") and "&signature=" in signed
    query = signed.split("?", 1)[1]
    link = re.search(r"Dashboard login link \(valid until [^)]*\): (\S+)", out).group(1)
    assert link.startswith(f"http://{rest}/login?expires=")
    prom = re.search(r"Prometheus metrics at http://(\S+)/metrics \(also (\S+)\)", out)
    assert prom.group(2) == f"{proxy_base}pages/metrics"
    prom = prom.group(1)
    assert prom.split(":")[0] == rest.split(":")[0] and prom != rest

    # the web proxy as the anonymous web user (dr.who) of a cluster without Kerberos: skein's UI
    # admits it, the dashboard's data needs the signed query, which the proxy passes on
    status, body = fetch(signed)
    assert status == 200 and "emrflow dashboard" in body, (status, body[:300])
    overview = wait_for(lambda: (ov := json.loads(fetch(f"{proxy_base}pages/emrflow/overview?{query}")[1]))
                        ["slots-total"] == 2 and ov, 120, "the TaskManager's slots")
    assert overview["taskmanagers"] == 1 and overview["slots-available"] == 2
    status, body = fetch(f"{proxy_base}pages/emrflow/overview")
    assert status == 401 and "login link" in body, (status, body[:300])
    expired = re.sub(r"expires=\d+", "expires=1000000000", query)
    assert fetch(f"{proxy_base}pages/emrflow/overview?{expired}")[0] == 401
    status, body = fetch(f"{proxy_base}pages/metrics")
    assert status == 200 and "flink_jobmanager_taskSlotsAvailable 2.0" in body
    # skein's UI, open to dr.who, shows the key-value store without the secret and the token
    token = yarn_apps.kv(app_id)["emrflow.rest.token"][1:].decode()
    secret = yarn_apps.kv(app_id)["emrflow.secret"][1:].decode()
    status, body = fetch(f"{proxy_base}kv")
    assert status == 200 and "emrflow.rest.token" in body and "&lt;binary value&gt;" in body, body[:2000]
    assert token not in body and secret not in body
    # directly, the REST API wants a credential
    assert fetch(f"http://{rest}/overview")[0] == 401

    # a real browser through the proxy: the page adds the signed query to each of its calls
    browser.get(signed + "#/taskmanagers")
    wait_for(lambda: text_of(browser, "#taskmanagers td") not in (None, ""), 60,
             "the TaskManagers table through YARN's web proxy")
    assert browser.current_url.startswith(f"{proxy_base}pages/emrflow/?expires=")

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
    proc = cli("list", "-a", "-m", rest, env=yenv, check=False)
    assert proc.returncode == 1 and "401" in proc.stderr, proc.stderr
    proc = cli("list", "-a", "-m", rest, "-D", f"rest.auth.token={token}", env=yenv)
    assert "No jobs." in proc.stderr

    status_out = cli("yarn-session", "status", env=yenv).stdout
    assert f"Prometheus metrics at http://{prom}/metrics" in status_out
    assert re.search(rf"Dashboard login link \(valid until [^)]*\): http://{re.escape(rest)}/login\?", status_out)

    out = cli("yarn-session", "stop", env=yenv).stdout
    assert f"Stopped YARN session {app_id}" in out
