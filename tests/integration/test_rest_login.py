"""Browser access to a token-protected REST server: signed login links, the session cookie, the
signed query (the way through YARN's web proxy); against a real standalone cluster (JobManager and
TaskManager processes).

Signatures are computed here with plain ``hmac``/``hashlib`` from the documented recipe, not with
emrflow's helpers.
"""

from __future__ import annotations

import hashlib
import hmac
import http.cookiejar
import json
import time
import urllib.error
import urllib.request

import pytest

from tests.integration.test_dashboard import browser, text_of  # noqa: F401 - browser: a fixture
from tests.integration.test_standalone import Cluster, wait_for

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token"


def sign(purpose: str) -> str:
    return hmac.new(TOKEN.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def link(rest: str, expires: int) -> str:
    return f"http://{rest}/login?expires={expires}&signature={sign(f'login:{expires}')}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("login") / "cluster"), taskmanagers=1,
                extra=("-D", f"rest.auth.token={TOKEN}"))
    yield c
    assert not c.stop(), "cluster processes left running"


def jar_opener():
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar


def fetch(opener, url):
    """(status, headers, body text) of a GET; HTTP errors are answers too."""
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read().decode()


def test_login_link_sets_a_session_cookie_that_authenticates(cluster):
    opener, jar = jar_opener()
    status, _, body = fetch(opener, f"http://{cluster.rest}/overview")
    assert status == 401 and "login" in json.loads(body)["errors"][0]
    status, headers, body = fetch(opener, link(cluster.rest, int(time.time()) + 600))
    assert status == 200
    assert 'url=./' in body and TOKEN not in body
    set_cookie = headers["Set-Cookie"]
    assert set_cookie.startswith(f"emrflow_session={sign('session')};")
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    assert [c.name for c in jar] == ["emrflow_session"]
    status, _, body = fetch(opener, f"http://{cluster.rest}/overview")
    assert status == 200 and json.loads(body)["slots-total"] == 1
    status, _, body = fetch(opener, f"http://{cluster.rest}/")
    assert status == 200 and "emrflow dashboard" in body
    # the dashboard asks for its data with relative URLs, so it works under a proxy's prefix
    assert 'api("overview")' in body and 'api("/' not in body and "api(`/" not in body
    # another browser, without the cookie, is still refused
    assert fetch(jar_opener()[0], f"http://{cluster.rest}/overview")[0] == 401


def test_the_cli_helper_makes_the_documented_link():
    from emrflow.runtime.rest import login_link
    now = 1_700_000_000
    assert login_link("http://h:1/", TOKEN, valid_s=60, now_s=now) == link("h:1", now + 60)


@pytest.mark.parametrize("query, reason", [
    ("", "not a valid login link"),
    ("?expires=99999999999&signature=" + "0" * 64, "not a valid login link"),
    ("?expires=abc&signature=x", "not a valid login link"),
    (None, "expired"),
])
def test_wrong_or_expired_login_links_set_no_cookie(cluster, query, reason):
    opener, jar = jar_opener()
    if query is None:  # rightly signed, but over
        url = link(cluster.rest, int(time.time()) - 5)
    else:
        url = f"http://{cluster.rest}/login{query}"
    status, headers, body = fetch(opener, url)
    assert status == 401 and reason in json.loads(body)["errors"][0]
    assert "Set-Cookie" not in headers and not list(jar)
    assert fetch(opener, f"http://{cluster.rest}/overview")[0] == 401


def test_a_forged_cookie_is_refused(cluster):
    req = urllib.request.Request(f"http://{cluster.rest}/overview",
                                 headers={"Cookie": "emrflow_session=" + sign("something else")})
    assert fetch(urllib.request.build_opener(), req)[0] == 401


def signed(expires: int) -> str:
    return f"expires={expires}&signature={sign(f'login:{expires}')}"


def test_a_signed_query_authenticates_any_request_without_a_cookie(cluster):
    """The way through YARN's web proxy, which forwards the query but no cookie or header."""
    opener, jar = jar_opener()
    good = signed(int(time.time()) + 600)
    status, _, body = fetch(opener, f"http://{cluster.rest}/overview?{good}")
    assert status == 200 and json.loads(body)["taskmanagers"] == 1
    status, headers, body = fetch(opener, f"http://{cluster.rest}/?{good}")
    assert status == 200 and "emrflow dashboard" in body and headers["Referrer-Policy"] == "no-referrer"
    assert fetch(opener, f"http://{cluster.rest}/jobs/nope?{good}")[0] == 404
    assert not list(jar)                                         # no cookie: each request carries it
    expired = int(time.time()) - 5
    for wrong in (signed(expired), f"expires={int(time.time()) + 600}&signature={sign('login:1')}",
                  f"expires=abc&signature={sign('login:abc')}", f"signature={sign('proxy')}"):
        assert fetch(opener, f"http://{cluster.rest}/overview?{wrong}")[0] == 401, wrong
    from emrflow.runtime.rest import signed_query
    assert signed_query(TOKEN, valid_s=60, now_s=1_700_000_000) == signed(1_700_000_060)


def test_a_real_browser_logs_in_or_carries_the_signed_query(cluster, browser):
    """Chromium: the login link's cookie (HttpOnly, SameSite=Strict) reaches the dashboard's calls;
    opened with a signed query instead, the dashboard adds it to every call."""
    browser.get(f"http://{cluster.rest}/")
    assert "missing or wrong bearer token" in browser.page_source
    browser.get(link(cluster.rest, int(time.time()) + 600))
    wait_for(lambda: text_of(browser, "#ov-slots") == "1 / 1", what="the dashboard after the login")
    assert browser.current_url == f"http://{cluster.rest}/"
    [cookie] = browser.get_cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == ("emrflow_session", True, "Strict")
    browser.delete_all_cookies()
    # opened with a signed query and no cookie (as through YARN's web proxy): every call carries it
    browser.get(f"http://{cluster.rest}/?{signed(int(time.time()) + 600)}#/taskmanagers")
    wait_for(lambda: text_of(browser, "#taskmanagers td") not in (None, ""), what="TaskManagers with the signed query")
    assert not browser.get_cookies()
