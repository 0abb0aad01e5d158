"""Logs of a real YARN application (emrflow.deploy.yarn_logs, `emrflow yarn-session logs`) on the
MiniYARNCluster: a skein application whose master and ``taskmanager`` service print markers, read
live from the NodeManagers while it runs, then from the aggregated logs through ``yarn logs``.

The reference for every assertion is independent of the module under test: the markers the
scripts print, the container ids and node addresses skein reports, YARN's container naming.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from emrflow.deploy import yarn_logs
from emrflow.errors import ClusterError

pytestmark = [pytest.mark.yarn,
              # skein 0.8's Client uses distutils' LooseVersion
              pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")]


def wait_for(what: str, probe, timeout_s: float, interval_s: float = 1.0):
    """Call ``probe`` until it returns something true (ClusterError counts as not yet); bounded."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except ClusterError as exc:
            value, last = None, exc
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last error: {last})")


def by_file(logs: list[yarn_logs.LogFile]) -> dict[tuple[str, str], yarn_logs.LogFile]:
    return {(f.container_id, f.file_name): f for f in logs}


def test_live_then_aggregated_logs_of_a_skein_application(yarn_env, tmp_path):
    import skein
    tag = uuid.uuid4().hex[:12]
    master_out, master_err = f"MASTER-OUT-{tag}", f"MASTER-ERR-{tag}"
    tm_out, tm_err = f"TM-OUT-{tag}", f"TM-ERR-{tag}"
    spec = skein.ApplicationSpec(
        name="emrflow-test-logs", queue="default", max_attempts=1,
        master=skein.Master(resources=skein.Resources(memory=256, vcores=1),
                            script=f"echo {master_out}; echo {master_err} >&2; exec sleep 600"),
        services={"taskmanager": skein.Service(
            resources=skein.Resources(memory=256, vcores=1), instances=1, max_restarts=0,
            script=f"echo {tm_out}; echo {tm_err} >&2; exec sleep 600")})
    with skein.Client(security=skein.Security.new_credentials(), log=False) as client:
        app = client.submit_and_connect(spec)
        app_id = app.id
        ended = False
        try:
            tm = wait_for("the taskmanager container runs",
                          lambda: app.get_containers(services=["taskmanager"], states=["RUNNING"]), 90)[0]
            # YARN names the ApplicationMaster container of attempt 1 after the application
            am_id = app_id.replace("application_", "container_") + "_01_000001"

            # -- live, from the NodeManagers -----------------------------------------------------
            listed = yarn_logs.containers(app_id)
            assert [(c.container_id, c.application_master) for c in listed] == [
                (am_id, True), (tm.yarn_container_id, False)]
            assert listed[1].node_http_address == tm.yarn_node_http_address
            assert all(c.state == "RUNNING" for c in listed)

            def live_with_markers():
                files = by_file(yarn_logs.application_logs(app_id))
                driver = files.get((am_id, "application.driver.log"))
                tm_log = files.get((tm.yarn_container_id, "taskmanager.log"))
                if driver and tm_log and master_err in driver.text and tm_err in tm_log.text:
                    return files
            files = wait_for("both markers in the live logs", live_with_markers, 60)
            driver = files[(am_id, "application.driver.log")]
            assert driver.text == f"{master_out}\n{master_err}\n"        # stdout and stderr, nothing else
            assert driver.size == len(driver.text.encode())
            assert files[(tm.yarn_container_id, "taskmanager.log")].text == f"{tm_out}\n{tm_err}\n"
            skein_am = files[(am_id, "application.master.log")]
            assert f"taskmanager_0 on {tm.yarn_container_id}" in skein_am.text   # skein's AM logs its containers
            assert "JobManager" in driver.role and "TaskManager" in files[(tm.yarn_container_id,
                                                                            "taskmanager.log")].role
            assert not any(f.aggregated for f in files.values())
            assert {f.file_name for f in files.values() if f.container_id == tm.yarn_container_id} >= {
                "taskmanager.log", "prelaunch.err", "launch_container.sh"}
            assert (tm.yarn_container_id, "application.driver.log") not in files

            # one file, its end only; one container
            tail = yarn_logs.application_logs(app_id, files=["application.driver.log"], tail_bytes=7)
            assert [(f.container_id, f.text, f.size) for f in tail] == [
                (am_id, driver.text.encode()[-7:].decode(), driver.size)]
            only_tm = yarn_logs.application_logs(app_id, container_id=tm.yarn_container_id)
            assert {f.container_id for f in only_tm} == {tm.yarn_container_id}
            with pytest.raises(ClusterError, match=r"--file nosuch.log: no such log file .*taskmanager.log"):
                yarn_logs.application_logs(app_id, files=["nosuch.log"])

            # the CLI names the file and what it holds
            emrflow = os.path.join(os.path.dirname(sys.executable), "emrflow")
            out = subprocess.run([emrflow, "yarn-session", "logs", "--id", app_id, "--file", "taskmanager.log"],
                                 capture_output=True, text=True, timeout=120, cwd=tmp_path, env=yarn_env)
            assert out.returncode == 0, out.stderr
            assert out.stdout == (f"==> {tm.yarn_container_id} on {tm.yarn_node_http_address}: taskmanager.log"
                                  f" - {yarn_logs.FILE_ROLES['taskmanager.log']} <==\n{tm_out}\n{tm_err}\n")
            assert f"1 log files of {app_id}, live, from the NodeManagers" in out.stderr

            # -- after the end: aggregated, through `yarn logs` ------------------------------------
            app.shutdown("SUCCEEDED")
            wait_for("the application ends", lambda: str(client.application_report(app_id).state) == "FINISHED", 60)
            ended = True

            def aggregated():
                got = yarn_logs.application_logs(app_id, files=["application.driver.log", "taskmanager.log"])
                return got if {f.file_name for f in got} == {"application.driver.log", "taskmanager.log"} else None
            files = by_file(wait_for("the aggregated logs", aggregated, 120, interval_s=3))
            assert all(f.aggregated for f in files.values())
            assert sorted(files) == sorted([(am_id, "application.driver.log"),
                                            (tm.yarn_container_id, "taskmanager.log")])
            assert files[(am_id, "application.driver.log")].text == f"{master_out}\n{master_err}\n"
            assert files[(tm.yarn_container_id, "taskmanager.log")].text == f"{tm_out}\n{tm_err}\n"
            # the CLI, the end of one file
            out = subprocess.run([emrflow, "yarn-session", "logs", "--id", app_id, "--file", "taskmanager.log",
                                  "--tail", "5"], capture_output=True, text=True, timeout=180, cwd=tmp_path,
                                 env=yarn_env)
            assert out.returncode == 0, out.stderr
            size = len(f"{tm_out}\n{tm_err}\n")
            header, text = out.stdout.splitlines()
            assert re.fullmatch(rf"==> {tm.yarn_container_id} on \S+: taskmanager.log \(last 5 of {size} bytes\) - "
                                rf"{re.escape(yarn_logs.FILE_ROLES['taskmanager.log'])} <==", header), header
            assert text == tm_err[-4:]
            assert f"1 log files of {app_id}, aggregated, through `yarn logs`" in out.stderr
        finally:
            if not ended:
                client.kill_application(app_id)


def test_unknown_application_names_the_resourcemanager(yarn_env, yarn_cluster):
    rm = yarn_cluster.web_address                      # what the cluster said it bound, not what we parsed
    with pytest.raises(yarn_logs.ApplicationNotFoundError,
                       match=rf"no YARN application application_1_9999 at the ResourceManager {rm} "
                             rf"\(GET http://{rm}/ws/v1/cluster/apps/application_1_9999: 404\)"):
        yarn_logs.application_logs("application_1_9999")
