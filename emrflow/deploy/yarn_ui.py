"""How a user reaches a YARN session's dashboard, REST API and Prometheus endpoint.

The JobManager (``yarn_containers.run_master``) publishes its REST address, its token and,
with ``metrics.reporter.prom.port`` set, its Prometheus address in the application's skein
key-value store, and adds the dashboard and ``/metrics`` as pages of skein's web UI, which
is the application's tracking URL (``http://<RM web>/proxy/<application id>/``).
:func:`session_access` collects what ``emrflow yarn-session start`` and ``status`` print.
"""

from __future__ import annotations

from dataclasses import dataclass

from emrflow.deploy.yarn_containers import KV_PROM, UI_ROUTE_DASHBOARD, UI_ROUTE_METRICS


@dataclass(frozen=True)
class SessionAccess:
    """The addresses of a running session's JobManager, as a user reaches them.

    Attributes:
        rest: The REST API's ``host:port`` (the ApplicationMaster's NodeManager host).
        login_link: A signed link that logs a browser in to the dashboard at ``rest``
            (see :func:`emrflow.runtime.rest.login_link`); empty without a token.
        login_valid_until_s: When ``login_link`` expires, seconds since the epoch.
        dashboard_proxy: The dashboard through the ResourceManager's web proxy
            (``<tracking URL>pages/emrflow/?expires=...&signature=...``, signed like
            ``login_link`` and valid as long), or empty when YARN reports no tracking URL.
        prometheus: The Prometheus endpoint's ``host:port``, or empty when
            ``metrics.reporter.prom.port`` is unset.
        metrics_proxy: ``/metrics`` through the web proxy, or empty.
    """

    rest: str
    login_link: str
    login_valid_until_s: int
    dashboard_proxy: str
    prometheus: str
    metrics_proxy: str


def session_access(yarn, app_id: str, app, timeout_s: float = 20.0,
                   login_valid_s: float | None = None) -> SessionAccess:
    """Collect how a user reaches the running session ``app_id``.

    Args:
        yarn: The :class:`~emrflow.deploy.yarn.YarnClient`.
        app_id: The application id.
        app: Its skein ``ApplicationClient`` (from ``YarnClient.wait_running``).
        timeout_s: How long to wait for the JobManager to publish itself, in seconds.
        login_valid_s: Seconds the login link stays valid (default
            :data:`emrflow.runtime.rest.LOGIN_LINK_VALIDITY_S`, 12 hours).

    Returns:
        The addresses.

    Raises:
        ClusterError: the application ended, or its JobManager published nothing within
            ``timeout_s``.
    """
    import time

    from emrflow.deploy.yarn import jobmanager_of
    from emrflow.runtime.rest import LOGIN_LINK_VALIDITY_S, login_link, signed_query
    rest, token = jobmanager_of(yarn, app_id, app, timeout_s)
    valid_s = LOGIN_LINK_VALIDITY_S if login_valid_s is None else login_valid_s
    now = time.time()
    try:
        prom = (app.kv.get(KV_PROM) or b"").decode()
    except Exception:  # noqa: BLE001 - the address is optional; the REST address was read
        prom = ""
    tracking = _proxy_base(yarn.report(app_id).tracking_url, app_id)
    return SessionAccess(
        rest=rest,
        login_link=login_link(f"http://{rest}", token, valid_s, now) if token else "",
        login_valid_until_s=int(now + valid_s),
        dashboard_proxy=(f"{tracking}pages/{UI_ROUTE_DASHBOARD}/" + (f"?{signed_query(token, valid_s, now)}"
                                                                     if token else "")) if tracking else "",
        prometheus=prom,
        metrics_proxy=f"{tracking}pages/{UI_ROUTE_METRICS}" if tracking and prom else "")


def _proxy_base(tracking_url: str, app_id: str) -> str:
    """The application's tracking URL, ending in ``/``; empty when YARN reports none.

    A ResourceManager whose web address is configured with port 0 (bound to a free port, as
    Hadoop's MiniYARNCluster does) reports tracking URLs with port 0: then the web address
    in this client's ``yarn-site.xml`` is used, with the proxy's path ``/proxy/<app id>/``.
    """
    from urllib.parse import urlsplit
    if not tracking_url:
        return ""
    if "://" not in tracking_url:
        tracking_url = "http://" + tracking_url
    if urlsplit(tracking_url).port == 0:
        from emrflow.deploy.yarn_logs import hadoop_conf_dir, rm_web_address
        try:
            tracking_url = f"http://{rm_web_address(hadoop_conf_dir())}/proxy/{app_id}/"
        except Exception:  # noqa: BLE001 - only a printed hint depends on it
            return ""
    return tracking_url if tracking_url.endswith("/") else tracking_url + "/"


def describe(access: SessionAccess) -> list[str]:
    """The lines ``yarn-session start`` and ``status`` print about ``access``."""
    import time
    lines = []
    until = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(access.login_valid_until_s))
    if access.dashboard_proxy:
        lines.append(f"Dashboard through YARN's web proxy (valid until {until}; keep it private): "
                     f"{access.dashboard_proxy}")
    if access.login_link:
        lines.append(f"Dashboard login link (valid until {until}; keep it private): {access.login_link}")
    if access.prometheus:
        via = f" (also {access.metrics_proxy})" if access.metrics_proxy else ""
        lines.append(f"Prometheus metrics at http://{access.prometheus}/metrics{via}")
    return lines
