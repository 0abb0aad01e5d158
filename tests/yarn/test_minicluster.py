"""The test YARN itself (fixture ``yarn_cluster``, tests/yarn/minicluster.py): real skein
applications on the MiniYARNCluster reach the outcomes a real cluster gives, the NodeManager
enforces container memory, containers do not see the test's environment, `yarn` works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import skein

from emrflow.deploy.yarn import skein_security

pytestmark = [pytest.mark.yarn,
              # skein 0.8's Client uses distutils' LooseVersion
              pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")]

#: the only variables the cluster JVM may have (minicluster.MiniYarnCluster.cluster_env)
SCRUBBED_KEYS = {"PATH", "JAVA_HOME", "LANG", "HOME", "TZ", "HADOOP_CONF_DIR", "JDK_JAVA_OPTIONS"}

PROBE = r'''
import json, os, subprocess, sys, time
import skein

app = skein.ApplicationClient.from_current()
python3 = subprocess.run(["python3", "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True)
app.kv["probe"] = json.dumps({"env": dict(os.environ), "python3_prefix": python3.stdout.strip(),
                              "cwd": os.getcwd()}).encode()
deadline = time.monotonic() + 120
while app.kv.get("stop") is None:
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.2)
print("probe done", flush=True)
'''


def wait_for(predicate, timeout_s: float, what: str):
    """Polls ``predicate`` until it returns a true value (returned) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def finished_report(client: skein.Client, app_id: str, timeout_s: float = 120):
    def done():
        report = client.application_report(app_id)
        return report if str(report.state) in ("FINISHED", "FAILED", "KILLED") else None
    return wait_for(done, timeout_s, f"{app_id} to end")


@pytest.fixture(scope="module")
def skein_client(yarn_cluster):
    """One skein client (driver JVM) of the test cluster for this module; kills the applications a
    test leaves running."""
    with pytest.MonkeyPatch.context() as mp:  # the driver reads the environment only at its start
        for key, value in yarn_cluster.env.items():
            mp.setenv(key, value)
        # skein_security: on a machine without ~/.skein, skein's own default warns (an error here)
        client = skein.Client(log=False, security=skein_security())
    with client:
        yield client
        for report in client.get_applications():
            client.kill_application(report.id)


def test_application_runs_in_clean_containers_and_succeeds(yarn_cluster, skein_client, yarn_env, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("EMRFLOW_LEAK_MARKER", "from-the-test")
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    spec = skein.ApplicationSpec(
        name="miniyarn-probe", queue="default", max_attempts=1,
        master=skein.Master(resources=skein.Resources(memory=512, vcores=1),
                            files={"probe.py": str(probe)},
                            script=f"{sys.executable} probe.py"))
    t0 = time.monotonic()
    app_id = skein_client.submit(spec)
    wait_for(lambda: str(skein_client.application_report(app_id).state) == "RUNNING", 120, f"{app_id} RUNNING")
    app = skein_client.connect(app_id, wait=False)
    seen = json.loads(wait_for(lambda: app.kv.get("probe"), 60, "the probe's report in the key-value store"))

    # while it runs, the leak check finds the container's processes (so an empty result later means something)
    running = yarn_cluster.container_processes()
    assert any("probe.py" in " ".join(p.cmdline()) for p in running), [p.cmdline() for p in running]

    app.kv["stop"] = b"1"
    report = finished_report(skein_client, app_id)
    print(f"\nsubmit -> FINISHED: {time.monotonic() - t0:.1f} s")
    assert (str(report.state), str(report.final_status)) == ("FINISHED", "SUCCEEDED"), report.diagnostics

    env = seen["env"]
    assert env["CONTAINER_ID"].startswith("container_")
    assert env["JAVA_HOME"] == yarn_cluster.env["JAVA_HOME"]
    assert "--add-opens=java.base/java.lang=ALL-UNNAMED" in env["JDK_JAVA_OPTIONS"]
    for leaked in ("EMRFLOW_LEAK_MARKER", "PYTEST_CURRENT_TEST", "VIRTUAL_ENV", "PYTHONPATH", "SKEIN_CONFIG"):
        assert leaked not in env, f"{leaked} reached the container"
    assert os.path.dirname(sys.executable) not in env["PATH"].split(os.pathsep)
    assert seen["python3_prefix"] and seen["python3_prefix"] != sys.prefix  # `python3` is not the test's venv
    assert seen["cwd"].startswith(os.path.join(yarn_cluster.work_dir, "cluster"))

    wait_for(lambda: not yarn_cluster.container_processes(), 30, "the container processes to end")
    # the container's stdout, aggregated to HDFS after the end, through `yarn logs`
    def aggregated():
        out = subprocess.run(["yarn", "logs", "-applicationId", app_id, "-log_files", "application.driver.log"],
                             env=yarn_env, capture_output=True, text=True, timeout=60)
        return "probe done" in out.stdout
    wait_for(aggregated, 60, f"`yarn logs -applicationId {app_id}` to show the container's output")


def test_nodemanager_kills_a_container_beyond_its_memory(yarn_cluster, skein_client):
    # A service container of 256 MiB whose script touches 512 MiB. (Not the ApplicationMaster's
    # container: when YARN kills that one, skein's ApplicationMaster often unregisters FAILED on the
    # SIGTERM first, and the application report then lacks the NodeManager's memory diagnostics.)
    spec = skein.ApplicationSpec(
        name="miniyarn-pmem", queue="default", max_attempts=1,
        master=skein.Master(resources=skein.Resources(memory=256, vcores=1), script="sleep 300"),
        services={"hog": skein.Service(
            resources=skein.Resources(memory=256, vcores=1), instances=1, max_restarts=0, allow_failures=True,
            script="python3 -c \"x = b'x' * (512 << 20); import time; time.sleep(120)\"")})
    app_id = skein_client.submit(spec)
    wait_for(lambda: str(skein_client.application_report(app_id).state) == "RUNNING", 120, f"{app_id} RUNNING")
    app = skein_client.connect(app_id, wait=False)
    t0 = time.monotonic()
    failed = wait_for(lambda: app.get_containers(services=["hog"], states=["FAILED"]), 90,
                      "the NodeManager to kill the hog container")
    assert time.monotonic() - t0 < 90  # killed by the NodeManager, not ended by the script's sleep
    message = failed[0].exit_message
    assert message.endswith("of 256 MB physical memory used"), message  # skein's digest of YARN's diagnostics
    assert float(message.split()[0]) > 256
    app.shutdown("SUCCEEDED")
    report = finished_report(skein_client, app_id)
    assert (str(report.state), str(report.final_status)) == ("FINISHED", "SUCCEEDED"), report.diagnostics
    wait_for(lambda: not yarn_cluster.container_processes(), 30, "the killed container's processes to end")


def test_cluster_jvm_environment_is_scrubbed_and_both_nodemanagers_run(yarn_cluster, yarn_env):
    jvm_env = psutil.Process(yarn_cluster.pid).environ()
    assert set(jvm_env) <= SCRUBBED_KEYS, sorted(set(jvm_env) - SCRUBBED_KEYS)
    assert jvm_env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    classpath = subprocess.run(["yarn", "classpath", "--glob"], env=yarn_env, capture_output=True, text=True,
                               check=True).stdout.strip()
    assert classpath.split(":")[0] == yarn_cluster.conf_dir
    assert os.path.exists(os.path.join(yarn_cluster.conf_dir, "yarn-site.xml"))

    out = subprocess.run(["yarn", "node", "-list", "-states", "RUNNING"], env=yarn_env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Total Nodes:2" in out.stdout, out.stdout
