"""Amazon EMR as it really behaves: the defects of issue 13 that need no YARN cluster.

Against moto in server mode (conftest_emr.py; boto3 is never patched), botocore's own
request validator, and real processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
from conftest_emr import BUCKET, FAKE_ENV, aws, aws_env, counting_endpoint, moto_endpoint  # noqa: F401

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*")]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env_without_region(tmp_path, endpoint: str) -> dict:
    """A process environment with credentials and the moto endpoint but no region anywhere."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")}
    empty = tmp_path / "aws-config"
    empty.write_text("")
    env.update({k: v for k, v in FAKE_ENV.items() if k != "AWS_DEFAULT_REGION"})
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty),
               AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=endpoint)
    return env


# --------------------------------------------------------------------------- 1. S3 region

def test_s3_region_comes_from_the_bucket_when_nothing_configures_one(aws, moto_endpoint, tmp_path):
    bucket = "emrflow-in-ireland"
    with contextlib.suppress(aws.s3.exceptions.BucketAlreadyOwnedByYou):
        aws.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    code = textwrap.dedent(f"""
        import json
        from emrflow.fs import FileSystem
        files = FileSystem()
        files.write_bytes("s3://{bucket}/x/data.txt", b"hello")
        s3, _ = files.resolve("s3://{bucket}/x/data.txt")
        print(json.dumps({{"region": s3.region, "data": files.read_bytes("s3://{bucket}/x/data.txt").decode(),
                          "other": files.s3_region(None)}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], env=_env_without_region(tmp_path, moto_endpoint),
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"region": "eu-west-1", "data": "hello", "other": "us-east-1"}
    # what moto recorded: the object is in the Irish bucket
    assert aws.s3.get_object(Bucket=bucket, Key="x/data.txt")["Body"].read() == b"hello"
    assert aws.s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"


def test_configured_region_wins_over_the_bucket(aws, moto_endpoint, tmp_path):
    env = _env_without_region(tmp_path, moto_endpoint)
    (tmp_path / "aws-config").write_text("[default]\nregion = ap-southeast-2\n")
    code = "from emrflow import fs; print(fs.FileSystem().s3_region('emrflow-in-ireland'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ap-southeast-2"


# --------------------------------------------------------------------------- helpers

import base64  # noqa: E402

import yaml  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from emrflow.cli import main  # noqa: E402
from emrflow.deploy import emr  # noqa: E402
from emrflow.deploy.emr import checks as emr_checks  # noqa: E402
from emrflow.errors import ConfigError  # noqa: E402

BATCH = os.path.join(ROOT, "configs", "emr-batch.yaml")
STREAMING = os.path.join(ROOT, "configs", "emr-streaming.yaml")
TEMPLATES = sorted(os.path.join(ROOT, "configs", f) for f in os.listdir(os.path.join(ROOT, "configs"))
                   if f.startswith("emr-") and f.endswith(".yaml"))
JOB = os.path.join(ROOT, "examples", "latest_rating.py")


def cli(*args, endpoint=None):
    """Run ``emrflow ARGS`` in-process (the endpoint option goes right after the command name)."""
    extra = ["--endpoint-url", endpoint] if endpoint else []
    return CliRunner().invoke(main, [*args[:1], *extra, *args[1:]], catch_exceptions=False)


def spec_file(tmp_path, edit, base=BATCH, name="spec.yaml") -> str:
    """Write ``base`` changed by ``edit(data)`` (a function of the YAML mapping) to tmp_path."""
    with open(base) as f:
        data = yaml.safe_load(f)
    edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def read(path) -> str:
    with open(path) as f:
        return f.read()


def request_of(path, **over) -> dict:
    spec = emr.load_cluster_spec(path, **over)
    return emr.build_run_job_flow_request(spec, emr.plan_staging(spec, None, None, None, dry_run=True))


def botocore_valid(operation: str, params: dict) -> None:
    """Independent check: botocore's own validator over the operation's input shape."""
    import botocore.session
    from botocore.validate import ParamValidator
    shape = botocore.session.get_session().get_service_model("emr").operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def without(classification):
    def edit(data):
        data["configurations"] = [c for c in data["configurations"] if c["Classification"] != classification]
    return edit


# --------------------------------------------------------------------------- 2. no emrflow-conf

def test_spec_without_emrflow_conf_still_writes_the_file_steps_read(tmp_path):
    path = spec_file(tmp_path, lambda d: [without("emrflow-conf")(d), without("emrflow-log")(d)])
    request = request_of(path)
    actions = {a["Name"]: a["ScriptBootstrapAction"] for a in request["BootstrapActions"]}
    assert "write emrflow configuration" in actions
    conf_dir = tmp_path / "etc-emrflow-conf"
    script = os.path.join(ROOT, "bootstrap", "write-emrflow-conf.sh")
    run = subprocess.run(["bash", script, *actions["write emrflow configuration"]["Args"], "--dir", str(conf_dir)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (conf_dir / "emrflow-conf.yaml").is_file()
    # what the `emrflow` wrapper does on the node: EMRFLOW_CONF_DIR set, then any emrflow command
    env = {**os.environ, "EMRFLOW_CONF_DIR": str(conf_dir)}
    show = subprocess.run([sys.executable, "-m", "emrflow.cli", "config", "show"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert yaml.safe_load(show.stdout)["parallelism.default"] == 1          # emrflow's default


def test_emrflow_conf_and_log_reach_the_written_files(tmp_path):
    args = {a["Name"]: a["ScriptBootstrapAction"]["Args"] for a in request_of(BATCH)["BootstrapActions"]}
    args = args["write emrflow configuration"]
    decoded = {args[i]: yaml.safe_load(base64.b64decode(args[i + 1])) for i in range(0, len(args), 2)}
    assert decoded == {"--conf-b64": {"taskmanager.numberOfTaskSlots": 2, "parallelism.default": 4},
                       "--log-b64": {"root.level": "INFO"}}


# --------------------------------------------------------------------------- 3. release labels

@pytest.mark.parametrize("label", ["emr-6.15.0", "emr-5.36.1"])
def test_releases_the_bootstrap_cannot_serve_are_refused_before_any_call(tmp_path, counting_endpoint, label):
    url, requests = counting_endpoint
    r = cli("create-cluster", "--config", BATCH, "--release-label", label, "--wheel", "s3://bucket-x/w/emrflow.whl",
            endpoint=url)
    assert r.exit_code == 1
    assert "--release-label" in r.stderr and "release_label" in r.stderr and "emr-7" in r.stderr, r.stderr
    path = spec_file(tmp_path, lambda d: d.update(release_label=label))
    r = cli("run-transient", "--config", path, "--wheel", "s3://bucket-x/w/emrflow.whl", JOB, endpoint=url)
    assert r.exit_code == 1 and f"{path}:2" in r.stderr and "release_label" in r.stderr, r.stderr
    assert requests == []                     # nothing uploaded, nothing called


def test_emr_7_releases_are_accepted():
    for label in ("emr-7.0.0", "emr-7.2.0", "emr-8.0.0"):
        assert request_of(BATCH, release_label=label)["ReleaseLabel"] == label


# --------------------------------------------------------------------------- 4. step concurrency

def test_concurrent_steps_only_continue(tmp_path, counting_endpoint):
    def edit(data):
        data["steps"] = [{"job": JOB, "action_on_failure": "TERMINATE_CLUSTER"}]
    path = spec_file(tmp_path, edit, base=STREAMING)
    with pytest.raises(ConfigError, match=r"action_on_failure: expected CONTINUE .*step_concurrency_level is 2"):
        emr.load_cluster_spec(path)
    text = read(path)
    assert f"{path}:{text[:text.index('TERMINATE_CLUSTER')].count(chr(10)) + 1}" in str(
        pytest.raises(ConfigError, emr.load_cluster_spec, path).value)
    # a streaming cluster's transient run: CONTINUE (what EMR accepts), batch: TERMINATE_CLUSTER
    assert emr_checks.transient_action_on_failure(2) == "CONTINUE"
    assert emr_checks.transient_action_on_failure(1) == "TERMINATE_CLUSTER"


def test_add_step_to_a_concurrent_cluster_refuses_cancel_and_wait_before_uploading(aws, moto_endpoint):
    request = request_of(STREAMING, log_uri=f"s3://{BUCKET}/logs/")
    cluster_id = aws.emr.run_job_flow(**request)["JobFlowId"]           # straight to moto: no uploads needed
    before = aws.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
    r = cli("add-step", "--cluster-id", cluster_id, "--action-on-failure", "CANCEL_AND_WAIT",
            "--s3-staging", f"s3://{BUCKET}/stage", JOB, endpoint=moto_endpoint)
    assert r.exit_code == 1 and "expected CONTINUE" in r.stderr and "step_concurrency_level" in r.stderr, r.stderr
    assert aws.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == before
    assert aws.emr.list_steps(ClusterId=cluster_id)["Steps"] == []


def test_run_transient_on_a_concurrent_spec_sends_continue(aws, moto_endpoint, tmp_path):
    wheel = tmp_path / "emrflow-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + b"\0" * 18)        # an empty zip; the nodes never install it here
    r = cli("run-transient", "--config", STREAMING, "--log-uri", f"s3://{BUCKET}/logs/", "--wheel", str(wheel),
            "--poll", "0.05", "--timeout", "1", JOB, endpoint=moto_endpoint)
    import re
    cluster_id = re.search(r"cluster (j-[A-Z0-9]+) created", r.output).group(1)
    steps = aws.emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert [s["ActionOnFailure"] for s in steps] == ["CONTINUE"], r.output
    c = aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert c["AutoTerminate"] is True and c["StepConcurrencyLevel"] == 2


# --------------------------------------------------------------------------- 6. what RunJobFlow takes

def test_unquoted_property_values_become_strings(tmp_path):
    def edit(data):
        data["configurations"][0]["Properties"].update({"yarn.nodemanager.vmem-check-enabled": False,
                                                        "yarn.resourcemanager.am.max-attempts": 4,
                                                        "yarn.nodemanager.vmem-pmem-ratio": 2.5})
    request = request_of(spec_file(tmp_path, edit))
    assert request["Configurations"][0]["Properties"] == {
        "yarn.nodemanager.vmem-check-enabled": "false", "yarn.resourcemanager.am.max-attempts": "4",
        "yarn.nodemanager.vmem-pmem-ratio": "2.5"}
    botocore_valid("RunJobFlow", request)


def test_nested_property_value_names_file_and_line(tmp_path):
    path = tmp_path / "nested.yaml"
    text = read(BATCH).replace('yarn.nodemanager.vmem-check-enabled: "false"',
                                      "yarn.nodemanager.vmem-check-enabled: {a: 1}")
    path.write_text(text)
    line = text[:text.index("{a: 1}")].count("\n") + 1
    with pytest.raises(ConfigError) as info:
        emr.load_cluster_spec(str(path))
    assert f"{path}:{line}" in str(info.value) and "a string, number or boolean" in str(info.value)


def test_fleet_spot_block_without_timeout_is_refused_with_file_and_line(tmp_path):
    def edit(data):
        del data["instance_groups"]
        data["instance_fleets"] = [
            {"role": "MASTER", "on_demand_capacity": 1, "instance_types": [{"instance_type": "m5.xlarge"}]},
            {"role": "TASK", "spot_capacity": 2, "instance_types": [{"instance_type": "c5.xlarge"}],
             "spot": {"allocation_strategy": "price-capacity-optimized"}}]
    path = spec_file(tmp_path, edit, base=STREAMING)
    with pytest.raises(ConfigError, match=r"spot\.timeout_minutes: expected timeout_minutes") as info:
        emr.load_cluster_spec(path)
    assert f"{path}:" in str(info.value)


@pytest.mark.parametrize("template", TEMPLATES, ids=os.path.basename)
def test_every_template_makes_requests_botocore_accepts(template, counting_endpoint):
    url, requests = counting_endpoint
    botocore_valid("RunJobFlow", request_of(template))
    r = cli("create-cluster", "--config", template, "--dry-run", endpoint=url)
    assert r.exit_code == 0, r.output
    body, _, line = r.output.rpartition("}\n")
    botocore_valid("RunJobFlow", json.loads(body + "}"))
    r = cli("add-step", "--cluster-id", "j-ABC123", "--dry-run", "s3://b-1/job.py", "--x", "1", endpoint=url)
    assert r.exit_code == 0, r.output
    botocore_valid("AddJobFlowSteps", json.loads(r.output.rpartition("}\n")[0] + "}"))
    assert requests == []


def test_validate_request_names_what_botocore_refuses():
    with pytest.raises(ConfigError, match=r"RunJobFlow request would be refused.*Instances"):
        emr_checks.validate_request("RunJobFlow", {"Name": "x"})


# --------------------------------------------------------------------------- 7. the printed aws line

def _cli_arg(line: str, option: str):
    import shlex
    words = shlex.split(line)
    return json.loads(words[words.index(option) + 1])


def test_printed_aws_line_keeps_market_and_everything_of_the_instance_groups(counting_endpoint):
    url, _ = counting_endpoint
    r = cli("create-cluster", "--config", STREAMING, "--dry-run", endpoint=url)
    assert r.exit_code == 0, r.output
    body, _, line = r.output.rpartition("}\n")
    request = json.loads(body + "}")
    groups = _cli_arg(line, "--instance-groups")
    # the AWS CLI's shape: InstanceGroupType for InstanceRole, otherwise the request's fields
    expected = [{("InstanceGroupType" if k == "InstanceRole" else k): v for k, v in g.items()}
                for g in request["Instances"]["InstanceGroups"]]
    assert groups == expected
    assert [g["Market"] for g in groups] == ["ON_DEMAND", "ON_DEMAND", "SPOT"]


# --------------------------------------------------------------------------- 10. scaling, security

def test_managed_scaling_and_security_configuration(tmp_path, counting_endpoint):
    def edit(data):
        data["managed_scaling"] = {"unit_type": "Instances", "minimum_capacity_units": 2,
                                   "maximum_capacity_units": 10, "maximum_on_demand_capacity_units": 4,
                                   "maximum_core_capacity_units": 3}
        data["security_configuration"] = "emrflow-at-rest-encryption"
    path = spec_file(tmp_path, edit)
    request = request_of(path)
    assert request["ManagedScalingPolicy"] == {"ComputeLimits": {
        "UnitType": "Instances", "MinimumCapacityUnits": 2, "MaximumCapacityUnits": 10,
        "MaximumOnDemandCapacityUnits": 4, "MaximumCoreCapacityUnits": 3}}
    assert request["SecurityConfiguration"] == "emrflow-at-rest-encryption"
    botocore_valid("RunJobFlow", request)
    url, _ = counting_endpoint
    line = cli("create-cluster", "--config", path, "--dry-run", endpoint=url).output.rpartition("}\n")[2]
    assert _cli_arg(line, "--managed-scaling-policy") == request["ManagedScalingPolicy"]
    assert "--security-configuration emrflow-at-rest-encryption" in line


@pytest.mark.parametrize("scaling,field", [
    ({"minimum_capacity_units": 5, "maximum_capacity_units": 2}, "maximum_capacity_units"),
    ({"maximum_capacity_units": 2}, "minimum_capacity_units"),
    ({"unit_type": "InstanceFleetUnits", "minimum_capacity_units": 1, "maximum_capacity_units": 2}, "unit_type"),
    ({"unit_type": "Nodes", "minimum_capacity_units": 1, "maximum_capacity_units": 2}, "unit_type"),
    ({"minimum_capacity_units": 1, "maximum_capacity_units": 2, "max_units": 3}, "max_units"),
])
def test_bad_managed_scaling_names_the_field_and_line(tmp_path, scaling, field):
    path = spec_file(tmp_path, lambda d: d.update(managed_scaling=scaling))
    with pytest.raises(ConfigError) as info:
        emr.load_cluster_spec(path)
    assert f"managed_scaling.{field}" in str(info.value) and f"{path}:" in str(info.value)


# --------------------------------------------------------------------------- 11. flink-conf, flink-log4j

def test_flink_conf_configures_emrflow_and_reports_unknown_keys(tmp_path, caplog):
    def edit(data):
        data["configurations"] = [c for c in data["configurations"] if c["Classification"] != "emrflow-log"]
        data["configurations"] += [
            {"Classification": "flink-conf", "Properties": {
                "taskmanager.numberOfTaskSlots": "4", "state.backend": "rocksdb", "parallelism.default": "8",
                "env.java.opts": "-XX:+UseG1GC", "high-availability": "zookeeper"}},
            {"Classification": "flink-log4j", "Properties": {"rootLogger.level": "WARN"}}]
    path = spec_file(tmp_path, edit)
    caplog.set_level("WARNING", logger="emrflow.deploy.emr.checks")
    request = request_of(path)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "env.java.opts" in warned and "high-availability" in warned and "taskmanager.numberOfTaskSlots" not in warned
    assert [c["Classification"] for c in request["Configurations"]] == ["yarn-site", "capacity-scheduler"]
    args = {a["Name"]: a["ScriptBootstrapAction"]["Args"] for a in request["BootstrapActions"]}
    args = args["write emrflow configuration"]
    written = {args[i]: yaml.safe_load(base64.b64decode(args[i + 1])) for i in range(0, len(args), 2)}
    # emrflow-conf (slots 2, parallelism 4) wins over flink-conf; the rest of flink-conf is mapped
    assert written == {"--conf-b64": {"taskmanager.numberOfTaskSlots": 2, "parallelism.default": 4,
                                      "state.backend.type": "rocksdb"},
                       "--log-b64": {"root.level": "WARNING"}}


def test_flink_conf_goes_to_emr_too_when_flink_is_installed(tmp_path):
    def edit(data):
        data["applications"] = ["Hadoop", "Flink"]
        data["configurations"].append({"Classification": "flink-conf",
                                       "Properties": {"taskmanager.numberOfTaskSlots": 3}})
    request = request_of(spec_file(tmp_path, edit))
    assert request["Configurations"][-1] == {"Classification": "flink-conf",
                                             "Properties": {"taskmanager.numberOfTaskSlots": "3"}}


def test_flink_conf_bad_value_names_key_and_line(tmp_path):
    path = tmp_path / "flink.yaml"
    text = read(BATCH).replace("tags:\n", "  - Classification: flink-conf\n    Properties:\n"
                                           "      parallelism.default: lots\ntags:\n")
    path.write_text(text)
    text = path.read_text()
    line = text[:text.index(": lots")].count("\n") + 1
    with pytest.raises(ConfigError) as info:
        emr.load_cluster_spec(str(path))
    assert f"{path}:{line}" in str(info.value) and "parallelism.default" in str(info.value)


# --------------------------------------------------------------------------- 7. --dry-run after JOB

def test_dry_run_after_job_is_refused_and_calls_nothing(counting_endpoint):
    url, requests = counting_endpoint
    r = cli("add-step", "--cluster-id", "j-ABC123", "s3://b-1/job.py", "--input", "x", "--dry-run", endpoint=url)
    assert r.exit_code == 2 and "--dry-run after JOB" in r.output and "before JOB" in r.output, r.output
    r = cli("run-transient", "--config", BATCH, "--wheel", "s3://bucket-x/w/emrflow.whl", JOB, "--dry-run",
            endpoint=url)
    assert r.exit_code == 2 and "--dry-run after JOB" in r.output, r.output
    assert requests == []


def test_job_gets_dry_run_after_double_dash(counting_endpoint):
    url, requests = counting_endpoint
    r = cli("add-step", "--cluster-id", "j-ABC123", "--dry-run", "s3://b-1/job.py", "--input", "x", "--",
            "--dry-run", endpoint=url)
    assert r.exit_code == 0, r.output
    step = json.loads(r.output.rpartition("}\n")[0] + "}")["Steps"][0]
    assert step["HadoopJarStep"]["Args"][-4:] == ["s3://b-1/job.py", "--input", "x", "--dry-run"]
    assert requests == []


# --------------------------------------------------------------------------- 8. SIGTERM (cancel-step)

SLOW_JOB = '''
import time
from emrflow import StreamExecutionEnvironment

def slow(x):
    time.sleep(0.05)
    return x

env = StreamExecutionEnvironment.get_execution_environment()
env.from_collection(list(range(100000))).map(slow).print()
env.execute("slow")
'''


def test_sigterm_cancels_the_running_job_and_leaves_no_process(tmp_path):
    import signal
    import time

    import psutil
    job = tmp_path / "slow_job.py"
    job.write_text(SLOW_JOB)
    proc = subprocess.Popen([sys.executable, "-m", "emrflow.cli", "run", "-p", "2", str(job)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line, deadline = "", time.monotonic() + 120
        while "submitted" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "emrflow run ended before the job was submitted"
        assert "submitted" in line
        family = psutil.Process(proc.pid).children(recursive=True)
        assert family, "the local target runs JobManager and TaskManagers as child processes"
        proc.send_signal(signal.SIGTERM)              # what CancelSteps' SEND_INTERRUPT does
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (130, 143), rest
    assert "Interrupted" in rest
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == []


def test_cancel_step_sends_interrupt(aws, moto_endpoint):
    """moto has no CancelSteps: the request is taken at botocore's before-call event (no HTTP)."""
    cluster_id = aws.emr.run_job_flow(**request_of(BATCH, log_uri=f"s3://{BUCKET}/logs/"))["JobFlowId"]
    step_id = aws.emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[emr.emrflow_step("s3://b-1/j.py")])["StepIds"][0]
    seen = []

    def answer(params, **kwargs):
        seen.append(params["body"])
        info = [{"StepId": step_id, "Status": "SUBMITTED", "Reason": ""}]
        return types.SimpleNamespace(status_code=200, headers={}), {"CancelStepsInfoList": info}
    aws.emr.meta.events.register("before-call.emr.CancelSteps", answer)
    assert emr.cancel_step(aws, cluster_id, step_id)["Status"] == "SUBMITTED"
    assert [json.loads(b) for b in seen] == [
        {"ClusterId": cluster_id, "StepIds": [step_id], "StepCancellationOption": "SEND_INTERRUPT"}]


# --------------------------------------------------------------------------- 9. container logs

APP = "application_1732990000000_0007"
STEP_STDERR = f"""Job 'latest rating' submitted with JobID {APP}
Error: job 'latest rating' failed: see the TaskManager's log
Command exiting with ret '1'
""".encode()
CONTAINER_STDERR = b"""2026-11-30 10:00:00 INFO taskmanager: slot 1 started
Traceback (most recent call last):
  File "/mnt/yarn/usercache/hadoop/appcache/x/latest_rating.py", line 40, in later
    if b[3] > a[3]:
TypeError: '>' not supported between instances of 'str' and 'int'
"""


def _put_gz(aws, uri: str, text: bytes) -> None:
    import gzip
    bucket, key = emr.split_s3_uri(uri)
    aws.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text))


def _failing_cluster(aws):
    log_uri = f"s3://{BUCKET}/logs-{os.urandom(4).hex()}/"
    cluster_id = aws.emr.run_job_flow(**request_of(BATCH, log_uri=log_uri))["JobFlowId"]
    return log_uri, cluster_id


def test_step_failure_waits_for_the_container_logs_and_names_the_users_traceback(aws, moto_endpoint):
    import threading
    import time
    log_uri, cluster_id = _failing_cluster(aws)
    job = "s3://b-1/jobs/latest_rating.py"
    container = f"{log_uri}{cluster_id}/containers/{APP}/container_1732990000000_0007_01_000002/stderr.gz"

    def fail_later():        # the step fails; its container logs reach S3 a while later, as on EMR
        deadline = time.monotonic() + 30
        while not aws.emr.list_steps(ClusterId=cluster_id)["Steps"] and time.monotonic() < deadline:
            time.sleep(0.05)
        step_id = aws.emr.list_steps(ClusterId=cluster_id)["Steps"][0]["Id"]
        _put_gz(aws, emr.step_log_prefix(log_uri, cluster_id, step_id) + "stderr.gz", STEP_STDERR)
        aws.emr.terminate_job_flows(JobFlowIds=[cluster_id])
        time.sleep(2.0)
        _put_gz(aws, container, CONTAINER_STDERR)
    t = threading.Thread(target=fail_later, daemon=True)
    t.start()
    r = cli("add-step", "--cluster-id", cluster_id, "--wait", "--poll", "0.2", "--log-wait", "60", job,
            endpoint=moto_endpoint)
    t.join()
    assert r.exit_code == 1
    step_id = r.stdout.strip()
    assert f"step 1 of 1 'emrflow latest_rating.py' ({step_id})" in r.stderr
    assert "waiting up to 60 s for the logs" in r.stderr
    assert f"last traceback in the YARN container log {container}" in r.stderr
    assert "TypeError: '>' not supported between instances of 'str' and 'int'" in r.stderr
    assert 'latest_rating.py", line 40, in later' in r.stderr
    assert "no YARN container logs" not in r.stderr


def test_missing_container_logs_are_named(aws, moto_endpoint):
    log_uri, cluster_id = _failing_cluster(aws)
    step_id = aws.emr.add_job_flow_steps(JobFlowId=cluster_id,
                                         Steps=[emr.emrflow_step("s3://b-1/j.py")])["StepIds"][0]
    _put_gz(aws, emr.step_log_prefix(log_uri, cluster_id, step_id) + "stderr.gz", STEP_STDERR)
    err = emr.step_failure(aws, cluster_id, step_id, "FAILED", log_wait_s=0)
    text = str(err)
    assert f"no YARN container logs at {log_uri}{cluster_id}/containers/{APP}/ yet" in text
    assert "Command exiting" not in text and "submitted with JobID" in text   # the step's own last lines


# --------------------------------------------------------------------------- 5. ApplicationMaster placement

@pytest.mark.parametrize("template", TEMPLATES, ids=os.path.basename)
def test_templates_with_spot_task_nodes_keep_application_masters_on_core_nodes(template):
    request = request_of(template)
    groups = request["Instances"].get("InstanceGroups", [])
    spot_tasks = [g for g in groups if g["InstanceRole"] == "TASK" and g["Market"] == "SPOT"]
    yarn_site = next((c["Properties"] for c in request.get("Configurations", [])
                      if c["Classification"] == "yarn-site"), {})
    if spot_tasks:
        assert yarn_site.get("yarn.node-labels.enabled") == "true"
        assert yarn_site.get("yarn.node-labels.am.default-node-label-expression") in ("CORE", "ON_DEMAND")
        assert int(request["ReleaseLabel"].split("-")[1].split(".")[1]) >= 2   # EMR 7.2+


# --------------------------------------------------------------------------- 12. Flink 1.x `run` flags

FLAGS_JOB = """
from emrflow import StreamExecutionEnvironment
env = StreamExecutionEnvironment.get_execution_environment()
env.from_collection([1, 2, 3]).map(lambda x: x + 1).print()
env.execute("flags")
"""


def _skein_spec(tmp_path, *args):
    job = tmp_path / "job.py"
    job.write_text(FLAGS_JOB)
    r = CliRunner().invoke(main, ["run", *args, "--dry-run", str(job)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return yaml.safe_load(r.stdout), r.stderr


def test_flink_1x_yarn_flags_mean_their_configuration_keys(tmp_path):
    flink, note = _skein_spec(tmp_path, "-m", "yarn-cluster", "-yn", "4", "-ys", "4", "-p", "16", "-yjm", "1024",
                              "-ytm", "4096m", "-ynm", "NAME", "-yqu", "QUEUE", "-yD", "yarn.tags=a")
    # the same run spelled with emrflow's (Flink 1.11+) options
    plain, _ = _skein_spec(tmp_path, "-t", "yarn-per-job", "-p", "16", "-D", "taskmanager.numberOfTaskSlots=4",
                           "-D", "jobmanager.memory.process.size=1024m", "-D", "taskmanager.memory.process.size=4096m",
                           "-D", "yarn.application.name=NAME", "-D", "yarn.application.queue=QUEUE",
                           "-D", "yarn.tags=a")
    assert flink == plain
    assert (flink["name"], flink["queue"]) == ("NAME", "QUEUE")
    assert flink["services"]["taskmanager"]["resources"]["memory"] == 4096
    assert "--slots 4" in flink["services"]["taskmanager"]["script"]
    assert "-yn 4 is deprecated" in note


def test_entry_class_is_refused_with_a_hint(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(FLAGS_JOB)
    r = CliRunner().invoke(main, ["run", "-m", "yarn-cluster", "-c", "org.example.WordCount", "--dry-run", str(job)])
    assert r.exit_code == 2 and "no entry class" in r.output and "org.example.WordCount" in r.output
    r = CliRunner().invoke(main, ["run", "-m", "yarn-cluster", "-t", "remote", "--dry-run", str(job)])
    assert r.exit_code == 2 and "-m yarn-cluster means -t yarn-per-job" in r.output


# --------------------------------------------------------------------------- 4. a job step before its session

def _session_run(tmp_path, timeout: str):
    job = tmp_path / "job.py"
    job.write_text(FLAGS_JOB)
    env = {**os.environ, "HOME": str(tmp_path)}        # the session record: ~/.emrflow/yarn-session.json
    return subprocess.Popen([sys.executable, "-m", "emrflow.cli", "run", "-t", "yarn-session", "-D",
                             f"yarn.session.wait-timeout={timeout}", str(job)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_session_job_waits_for_the_session_record_then_gives_up(tmp_path):
    import time
    started = time.monotonic()
    proc = _session_run(tmp_path, "3 s")
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 1
    assert time.monotonic() - started >= 3
    assert "waiting up to 3 s" in err and "Submitting to YARN session" not in err


def test_session_job_goes_on_once_the_session_is_recorded(tmp_path):
    import time
    proc = _session_run(tmp_path, "60 s")
    try:
        first = proc.stderr.readline()
        assert "waiting up to 60 s" in first
        started = time.monotonic()
        record = tmp_path / ".emrflow" / "yarn-session.json"
        record.parent.mkdir()
        record.write_text(json.dumps({"application_id": "application_1_0001", "rest": "h:1", "recorded": 0}))
        line = proc.stderr.readline()
        assert "Submitting to YARN session application_1_0001" in line
        assert time.monotonic() - started < 10
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
