"""What ``yarn-session start``/``status`` print about the dashboard (emrflow/deploy/yarn_ui.py)."""

from __future__ import annotations

from emrflow.deploy.yarn_ui import SessionAccess, _proxy_base, describe

APP = "application_1700000000000_0007"


def test_the_tracking_url_is_the_proxy_base():
    assert _proxy_base(f"http://rm:8088/proxy/{APP}/", APP) == f"http://rm:8088/proxy/{APP}/"
    assert _proxy_base(f"rm:8088/proxy/{APP}", APP) == f"http://rm:8088/proxy/{APP}/"
    assert _proxy_base("", APP) == ""


def test_a_tracking_url_with_port_0_falls_back_to_yarn_site(tmp_path, monkeypatch):
    (tmp_path / "yarn-site.xml").write_text(
        "<configuration><property><name>yarn.resourcemanager.webapp.address</name>"
        "<value>rm.example:18088</value></property></configuration>")
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert _proxy_base(f"http://localhost:0/proxy/{APP}/", APP) == f"http://rm.example:18088/proxy/{APP}/"
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path / "missing"))
    assert _proxy_base(f"http://localhost:0/proxy/{APP}/", APP) == ""


def test_describe_names_each_way_in():
    access = SessionAccess(rest="nm:4000", login_link="http://nm:4000/login?expires=1&signature=ab",
                           login_valid_until_s=1, dashboard_proxy=f"http://rm:8088/proxy/{APP}/pages/emrflow/",
                           prometheus="nm:9249", metrics_proxy=f"http://rm:8088/proxy/{APP}/pages/metrics")
    lines = describe(access)
    assert len(lines) == 3
    assert lines[0].endswith(f": http://rm:8088/proxy/{APP}/pages/emrflow/")
    assert lines[1].startswith("Dashboard login link (valid until ") and lines[1].endswith(access.login_link)
    assert lines[2] == f"Prometheus metrics at http://nm:9249/metrics (also http://rm:8088/proxy/{APP}/pages/metrics)"
    bare = SessionAccess("nm:4000", "", 0, "", "", "")
    assert describe(bare) == []
