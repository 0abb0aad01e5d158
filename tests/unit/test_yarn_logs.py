"""emrflow.deploy.yarn_logs, the pure parts: these tests check PARSING ONLY.

yarn-site.xml reading with Hadoop's ``${...}`` substitution, the JSON shapes of the
ResourceManager/NodeManager REST answers (small documents shaped like Hadoop's documented
responses, written here by hand) and the ``yarn logs`` dump format. They prove nothing about
YARN's behaviour; tests/yarn/test_yarn_logs.py reads real logs from a real cluster.
"""

from __future__ import annotations

import pytest

from emrflow.deploy import yarn_logs as yl
from emrflow.errors import ClusterError, ConfigError


def site(tmp_path, props: dict[str, str], name: str = "yarn-site.xml", final: tuple[str, ...] = ()) -> str:
    body = "".join(f"  <property>\n    <name>{k}</name>\n    <value>{v}</value>\n"
                   + ("    <final>true</final>\n" if k in final else "") + "  </property>\n"
                   for k, v in props.items())
    (tmp_path / name).write_text(f'<?xml version="1.0"?>\n<configuration>\n{body}</configuration>\n')
    return str(tmp_path)


# -- yarn-site.xml ----------------------------------------------------------------------------------

def test_webapp_address_wins(tmp_path):
    conf = site(tmp_path, {"yarn.resourcemanager.hostname": "rm.example", "yarn.resourcemanager.webapp.address":
                           "web.example:18088"})
    assert yl.rm_web_address(conf) == "web.example:18088"


def test_hostname_alone_gives_port_8088_through_the_default_substitution(tmp_path):
    conf = site(tmp_path, {"yarn.resourcemanager.hostname": "ip-10-0-0-1.ec2.internal"})
    assert yl.rm_web_address(conf) == "ip-10-0-0-1.ec2.internal:8088"


def test_substitution_chains_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EMRFLOW_TEST_RM_PORT", "28088")
    monkeypatch.delenv("EMRFLOW_TEST_UNSET", raising=False)
    conf = site(tmp_path, {"my.rm": "${my.rm.host}", "my.rm.host": "node-${env.EMRFLOW_TEST_UNSET:-7}",
                           "yarn.resourcemanager.hostname": "${my.rm}",
                           "yarn.resourcemanager.webapp.address":
                           "${yarn.resourcemanager.hostname}:${env.EMRFLOW_TEST_RM_PORT}"})
    assert yl.rm_web_address(conf) == "node-7:28088"


def test_core_site_values_are_seen_and_yarn_site_overrides_them(tmp_path):
    site(tmp_path, {"cluster.master": "core-host", "yarn.resourcemanager.hostname": "from-core"}, "core-site.xml")
    conf = site(tmp_path, {"yarn.resourcemanager.hostname": "${cluster.master}"})
    assert yl.rm_web_address(conf) == "core-host:8088"


def test_final_property_is_not_overridden(tmp_path):
    site(tmp_path, {"yarn.resourcemanager.hostname": "locked"}, "core-site.xml",
         final=("yarn.resourcemanager.hostname",))
    conf = site(tmp_path, {"yarn.resourcemanager.hostname": "other"})
    assert yl.rm_web_address(conf) == "locked:8088"


def test_unresolvable_variable_stays_as_hadoop_leaves_it_and_the_address_is_refused(tmp_path):
    conf = site(tmp_path, {"yarn.resourcemanager.webapp.address": "${nobody.sets.this}:8088"})
    props = yl.read_yarn_site(conf)
    assert yl.conf_get(props, "yarn.resourcemanager.webapp.address") == "${nobody.sets.this}:8088"
    with pytest.raises(ConfigError, match="yarn.resourcemanager.webapp.address.*nobody.sets.this"):
        yl.rm_web_address(conf)


def test_substitution_cycle_is_an_error_naming_the_key(tmp_path):
    conf = site(tmp_path, {"a": "x${b}", "b": "y${a}"})
    with pytest.raises(ConfigError, match=r"a: variable substitution depth too large"):
        yl.conf_get(yl.read_yarn_site(conf), "a")


def test_wildcard_host_means_this_host(tmp_path):
    assert yl.rm_web_address(site(tmp_path, {})) == "127.0.0.1:8088"


def test_resourcemanager_ha_lists_every_resourcemanager(tmp_path):
    conf = site(tmp_path, {"yarn.resourcemanager.ha.enabled": "true", "yarn.resourcemanager.ha.rm-ids": "rm1, rm2",
                           "yarn.resourcemanager.hostname.rm1": "m1", "yarn.resourcemanager.webapp.address.rm2":
                           "m2:9088"})
    assert yl.rm_web_addresses(conf) == ["m1:8088", "m2:9088"]


def test_https_only_is_a_clear_error(tmp_path):
    conf = site(tmp_path, {"yarn.resourcemanager.hostname": "rm", "yarn.http.policy": "HTTPS_ONLY"})
    with pytest.raises(ClusterError, match=r"yarn-site.xml: yarn.http.policy is HTTPS_ONLY.*HTTP only"):
        yl.rm_web_address(conf)


def test_address_without_port_names_key_and_file(tmp_path):
    conf = site(tmp_path, {"yarn.resourcemanager.webapp.address": "justahost"})
    with pytest.raises(ConfigError, match=r"yarn-site.xml: yarn.resourcemanager.webapp.address is 'justahost'; "
                                          r"expected HOST:PORT"):
        yl.rm_web_address(conf)


def test_malformed_xml_names_file_and_line(tmp_path):
    (tmp_path / "yarn-site.xml").write_text("<configuration>\n<property>\n<name>x</name>\n</configuration>\n")
    with pytest.raises(ConfigError, match=r"yarn-site.xml:4:\d+: not valid XML"):
        yl.rm_web_address(str(tmp_path))


def test_missing_yarn_site_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"yarn-site.xml does not exist"):
        yl.rm_web_address(str(tmp_path))


def test_conf_dir_from_environment(monkeypatch):
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    with pytest.raises(ClusterError, match="HADOOP_CONF_DIR is not set"):
        yl.hadoop_conf_dir()
    monkeypatch.setenv("HADOOP_CONF_DIR", "/h")
    assert yl.hadoop_conf_dir() == "/h"
    monkeypatch.setenv("YARN_CONF_DIR", "/y")   # Hadoop 3's scripts let the deprecated variable win
    assert yl.hadoop_conf_dir() == "/y"


# -- REST answers -> containers ------------------------------------------------------------------------

ATTEMPT = {"id": 1, "startTime": 1531405909444, "containerId": "container_1531404209605_0008_01_000001",
           "nodeHttpAddress": "host1.example:8042", "nodeId": "host1.example:37805",
           "logsLink": "http://host1.example:8042/node/containerlogs/container_1531404209605_0008_01_000001/u",
           "appAttemptId": "appattempt_1531404209605_0008_000001", "appAttemptState": "RUNNING"}


def container_row(n: int, host: str, **extra) -> dict:
    cid = f"container_1531404209605_0008_01_{n:06d}"
    row = {"containerId": cid, "allocatedMB": 1536, "allocatedVCores": 1, "assignedNodeId": f"{host}:37805",
           "priority": 0, "startedTime": 1531405909444, "finishedTime": 0, "elapsedTime": 4112,
           "logUrl": f"http://{host}:8042/node/containerlogs/{cid}/u", "containerExitStatus": 0,
           "containerState": "RUNNING", "nodeHttpAddress": f"http://{host}:8042", "nodeId": f"{host}:37805"}
    row.update(extra)
    return row


def test_containers_from_the_documented_shape():
    doc = {"containers": {"container": [container_row(3, "host2.example"), container_row(1, "host1.example"),
                                        container_row(2, "host2.example")]}}
    got = yl.parse_containers(ATTEMPT, doc)
    assert [(c.container_id[-6:], c.node_http_address, c.state, c.application_master) for c in got] == [
        ("000001", "host1.example:8042", "RUNNING", True),
        ("000002", "host2.example:8042", "RUNNING", False),
        ("000003", "host2.example:8042", "RUNNING", False)]


def test_a_single_container_may_come_as_an_object_and_without_node_http_address():
    row = container_row(2, "host9.example")
    del row["nodeHttpAddress"]          # older ResourceManagers: only logUrl says where the node is
    for doc in ({"containers": {"container": row}}, {"container": [row]}, {"containers": [row]}):
        got = yl.parse_containers(ATTEMPT, doc)
        # the ApplicationMaster container comes from the attempt when the list lacks it
        assert [(c.container_id[-6:], c.node_http_address, c.application_master) for c in got] == [
            ("000001", "host1.example:8042", True), ("000002", "host9.example:8042", False)]


def test_empty_container_answers():
    for doc in ({"containers": None}, {"containers": {}}, {}):
        assert [c.container_id for c in yl.parse_containers({}, doc)] == []


def test_attempt_id_built_when_the_resourcemanager_does_not_send_it():
    assert yl._attempt_id("application_1531404209605_0008", {"id": 2}) == "appattempt_1531404209605_0008_000002"
    assert yl._attempt_id("application_1_2", ATTEMPT) == "appattempt_1531404209605_0008_000001"


def test_log_listing_shapes():
    files = [{"fileName": "taskmanager.log", "fileSize": "2048", "lastModifiedTime": "Fri Jul 13 2018"},
             {"fileName": "prelaunch.err", "fileSize": "0", "lastModifiedTime": "Fri Jul 13 2018"}]
    one = {"containerLogInfo": files, "logAggregationType": "LOCAL",
           "containerId": "container_1531404209605_0008_01_000002", "nodeId": "host2.example:37805"}
    want = [("prelaunch.err", 0), ("taskmanager.log", 2048)]
    assert yl.parse_log_listing({"containerLogsInfo": [one]}) == want
    assert yl.parse_log_listing({"containerLogsInfo": one}) == want
    assert yl.parse_log_listing([one]) == want
    assert yl.parse_log_listing({"containerLogsInfo": {**one, "containerLogInfo": files[0]}}) == [
        ("taskmanager.log", 2048)]
    assert yl.parse_log_listing({}) == []


# -- log dumps (yarn logs, NodeManager containerlogs) ----------------------------------------------------

def block(cid: str, node: str, name: str, content: bytes, length: int | None = None, kind: str = "AGGREGATED",
          running: bool = False) -> bytes:
    head = f"Container: {cid} on {node}"
    end = f"End of LogType:{name}"
    trailer = (end + f".This log file belongs to a running container ({cid}) and so may not be complete.\n"
               if running else "\n" + end + "\n")
    return (f"{head}\nLogAggregationType: {kind}\n{'=' * len(head)}\nLogType:{name}\n"
            f"LogLastModifiedTime:Thu Nov 30 19:40:00 +0000 2023\n"
            f"LogLength:{len(content) if length is None else length}\n"
            f"LogContents:\n").encode() + content + trailer.encode() + b"*" * (len(end) + 50) + b"\n\n"


def test_dump_split_by_length_even_when_content_looks_like_a_header():
    tricky = block("container_9_0001_01_000002", "h2_1", "fake.log", b"x\n")  # a log that contains a dump
    dump = (b"some client noise\n"
            + block("container_9_0001_01_000001", "h1_45454", "application.driver.log", b"MARKER out\nerr line\n")
            + block("container_9_0001_01_000001", "h1_45454", "application.master.log", tricky)
            + block("container_9_0001_01_000002", "h2_45454", "taskmanager.log", "ünïcode, no newline".encode()))
    got = yl.parse_log_dump(dump)
    assert [(c[-6:], n, f, size) for c, n, f, size, _ in got] == [
        ("000001", "h1_45454", "application.driver.log", len(b"MARKER out\nerr line\n")),
        ("000001", "h1_45454", "application.master.log", len(tricky)),
        ("000002", "h2_45454", "taskmanager.log", len("ünïcode, no newline".encode()))]
    assert [t for *_, t in got] == ["MARKER out\nerr line\n", tricky.decode(), "ünïcode, no newline"]


def test_dump_of_a_tail_and_of_a_running_container():
    content = b"0123456789" * 10
    dump = block("container_9_0001_01_000001", "h1:8042", "taskmanager.log", content[-25:], length=100,
                 kind="LOCAL", running=True)
    (cid, node, name, size, text), = yl.parse_log_dump(dump, tail_bytes=25)
    assert (name, size, text) == ("taskmanager.log", 100, content[-25:].decode())


def test_dump_whose_file_shrank_falls_back_to_the_trailer():
    dump = block("container_9_0001_01_000001", "h1", "a.log", b"short\n", length=500)
    assert [t for *_, t in yl.parse_log_dump(dump)] == ["short\n"]


def test_no_dump_no_blocks():
    assert yl.parse_log_dump(b"Can not find any log file matching the pattern: [ALL]\n") == []


# -- names and where-the-logs-are ----------------------------------------------------------------------

def test_file_roles_name_jobmanager_taskmanager_and_skein():
    assert "JobManager" in yl.file_role("application.driver.log")
    assert "TaskManager" in yl.file_role("taskmanager.log")
    assert "skein's ApplicationMaster" in yl.file_role("application.master.log")
    assert yl.file_role("other.log") == "stdout and stderr of the skein service other"
    assert yl.file_role("core.1234") == ""
    assert yl.LogFile("c", "n", "taskmanager.log", 1, "x").role == yl.FILE_ROLES["taskmanager.log"]


def test_where_the_logs_are(tmp_path):
    props = yl.read_yarn_site(site(tmp_path, {"yarn.log-aggregation-enable": "true",
                                              "yarn.nodemanager.remote-app-log-dir": "hdfs:///var/log/apps"}))
    text = yl.where_the_logs_are("application_1_0002", props, "hadoop", "RUNNING")
    assert "hdfs:///var/log/apps/hadoop/" in text and "once the application has ended" in text
    assert "still uploading" in text and "<cluster-id>/containers/application_1_0002/" in text
    off = yl.read_yarn_site(site(tmp_path, {"yarn.nodemanager.log-dirs": "/mnt/yarn/logs"}))
    text = yl.where_the_logs_are("application_1_0002", off, "hadoop")
    assert "Log aggregation is off" in text and "/mnt/yarn/logs/application_1_0002/<container>/" in text


def test_bad_application_id_and_tail():
    with pytest.raises(ClusterError, match="'app_1' is not a YARN application id"):
        yl.application_logs("app_1", conf_dir="/nonexistent")
    with pytest.raises(ClusterError, match="--tail must be a positive number of bytes, got 0"):
        yl.application_logs("application_1_1", tail_bytes=0, conf_dir="/nonexistent")


def test_launch_details_are_quiet_unless_they_say_something():
    assert yl.LogFile("c", "n", "launch_container.sh", 10, "#!/bin/bash").quiet
    assert yl.LogFile("c", "n", "prelaunch.err", 0, "").quiet
    assert not yl.LogFile("c", "n", "prelaunch.err", 30, "/bin/bash: python9: not found\n").quiet
    assert not yl.LogFile("c", "n", "application.driver.log", 0, "").quiet


def test_no_resourcemanager_and_no_yarn_command_says_where_the_logs_are(tmp_path, monkeypatch):
    # no server anywhere: a localhost port that refuses connections, and a PATH without `yarn`
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]           # bound, never listening: connections are refused
        conf = site(tmp_path, {"yarn.resourcemanager.webapp.address": f"127.0.0.1:{port}",
                               "yarn.log-aggregation-enable": "true",
                               "yarn.nodemanager.remote-app-log-dir": "/var/log/hadoop-yarn/apps"})
        monkeypatch.setenv("PATH", str(tmp_path))
        with pytest.raises(ClusterError) as err:
            yl.application_logs("application_1700000000000_0007", conf_dir=conf, timeout_s=2)
    text = str(err.value)
    assert f"GET http://127.0.0.1:{port}/ws/v1/cluster/apps/application_1700000000000_0007: no answer" in text
    assert "no `yarn` command on PATH" in text
    assert "/var/log/hadoop-yarn/apps/<user>/" in text and "once the application has ended" in text
