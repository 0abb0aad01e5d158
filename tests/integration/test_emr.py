"""The Amazon EMR deploy layer against moto in server mode (no boto3 patching).

Each test checks what EMR recorded (describe_cluster, list_bootstrap_actions,
list_instance_groups, list_steps) and what landed in S3, field by field.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time

import pytest
import yaml
from click.testing import CliRunner
from conftest_emr import BUCKET, FAKE_ENV, aws, aws_env, built_wheel, counting_endpoint, moto_endpoint  # noqa: F401

from emrflow.cli import main
from emrflow.cli_emr import register
from emrflow.deploy import emr
from emrflow.errors import ClusterError, ConfigError

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*")]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH = os.path.join(ROOT, "configs", "emr-batch.yaml")
STREAMING = os.path.join(ROOT, "configs", "emr-streaming.yaml")
JOB = os.path.join(ROOT, "examples", "latest_rating.py")
RATINGS = os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv")
STAGING = f"s3://{BUCKET}/emrflow/staging"
STEPS_DIR = os.path.join(ROOT, "steps")

register(main)


def cli(*args, endpoint=None):
    """Run ``emrflow ARGS`` in-process; return the click Result."""
    extra = ["--endpoint-url", endpoint] if endpoint else []
    return CliRunner().invoke(main, [*args[:1], *extra, *args[1:]], catch_exceptions=False)


def s3_text(aws, uri) -> bytes:
    return aws.read(uri)


def sha256_prefix(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def request_of(spec_path, **over):
    spec = emr.load_cluster_spec(spec_path, **over)
    staging = emr.plan_staging(spec, None, None, None, dry_run=True)
    return emr.build_run_job_flow_request(spec, staging)


def new_cluster(aws, wheel, config=BATCH, **over) -> str:
    spec = emr.load_cluster_spec(config, **over)
    staging = emr.plan_staging(spec, None, wheel, None)
    return emr.create_cluster(aws, emr.build_run_job_flow_request(spec, staging), staging)


# --------------------------------------------------------------------------- create-cluster

def test_dry_run_prints_request_and_aws_cli_line_and_calls_nothing(counting_endpoint):
    url, requests = counting_endpoint
    r = cli("create-cluster", "--config", BATCH, "--dry-run", endpoint=url)
    assert r.exit_code == 0, r.output
    body, _, cli_line = r.output.rpartition("}\n")
    request = json.loads(body + "}")
    assert request == request_of(BATCH)
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 3600}
    assert [c["Classification"] for c in request["Configurations"]] == ["yarn-site", "capacity-scheduler"]
    assert cli_line.startswith("aws emr create-cluster --name emrflow-batch --release-label emr-7.1.0")
    assert "--auto-termination-policy IdleTimeout=3600" in cli_line and "--no-auto-terminate" in cli_line
    assert requests == []


def test_create_cluster_batch_template_builds_and_stages_the_wheel(aws, moto_endpoint):
    r = cli("create-cluster", "--config", BATCH, endpoint=moto_endpoint)
    assert r.exit_code == 0, r.output
    cluster_id = r.stdout.strip().splitlines()[-1]
    c = aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert c["Name"] == "emrflow-batch" and c["ReleaseLabel"] == "emr-7.1.0"
    assert [a["Name"] for a in c["Applications"]] == ["Hadoop"]
    assert c["LogUri"] == f"s3://{BUCKET}/emr-logs/"
    assert c["ServiceRole"] == "EMR_DefaultRole"
    attrs = c["Ec2InstanceAttributes"]
    assert attrs["IamInstanceProfile"] == "EMR_EC2_DefaultRole"
    assert attrs["Ec2KeyName"] == "my-key-pair" and attrs["Ec2SubnetId"] == "subnet-0123456789abcdef0"
    assert c["AutoTerminate"] is False                       # KeepJobFlowAliveWhenNoSteps true
    assert {t["Key"]: t["Value"] for t in c["Tags"]} == {"project": "emrflow", "purpose": "batch"}
    assert [x["Classification"] for x in c["Configurations"]] == ["yarn-site", "capacity-scheduler"]
    assert c["Configurations"][0]["Properties"] == {"yarn.nodemanager.vmem-check-enabled": "false"}
    groups = {g["InstanceGroupType"]: g for g in
              aws.emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert set(groups) == {"MASTER", "CORE"}
    assert (groups["MASTER"]["InstanceType"], groups["MASTER"]["RequestedInstanceCount"]) == ("m5.xlarge", 1)
    assert (groups["CORE"]["InstanceType"], groups["CORE"]["RequestedInstanceCount"]) == ("m5.xlarge", 2)
    assert groups["CORE"]["Market"] == "ON_DEMAND"
    actions = aws.emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert [a["Name"] for a in actions] == ["install emrflow", "write emrflow configuration"]
    wheel_uri = actions[0]["Args"][0]
    assert actions[0]["ScriptPath"] == f"{STAGING}/bootstrap/install-emrflow.sh"
    staged = s3_text(aws, wheel_uri)
    assert staged[:2] == b"PK"                                # a zip: the wheel
    digest = hashlib.sha256(staged).hexdigest()[:16]          # content-addressed key
    assert wheel_uri == f"{STAGING}/wheels/{digest}/{emr.expected_wheel_name()}"
    for name in ("install-emrflow.sh", "write-emrflow-conf.sh"):
        with open(os.path.join(ROOT, "bootstrap", name), "rb") as f:
            assert s3_text(aws, f"{STAGING}/bootstrap/{name}") == f.read()
    args = actions[1]["Args"]
    assert actions[1]["ScriptPath"] == f"{STAGING}/bootstrap/write-emrflow-conf.sh"
    assert args[0] == "--conf-b64" and args[2] == "--log-b64"
    assert yaml.safe_load(base64.b64decode(args[1])) == {"parallelism.default": 4,
                                                          "taskmanager.numberOfTaskSlots": 2}
    assert yaml.safe_load(base64.b64decode(args[3])) == {"root.level": "INFO"}


def test_create_cluster_streaming_template_with_overrides(aws, moto_endpoint, built_wheel):
    r = cli("create-cluster", "--config", STREAMING, "--name", "stream-x", "--release-label", "emr-7.2.0",
            "--instance-type", "m5.2xlarge", "--core-instance-count", "3", "--log-uri", f"s3://{BUCKET}/other/",
            "--wheel", built_wheel, endpoint=moto_endpoint)
    assert r.exit_code == 0, r.output
    cluster_id = r.stdout.strip().splitlines()[-1]
    c = aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert (c["Name"], c["ReleaseLabel"], c["LogUri"]) == ("stream-x", "emr-7.2.0", f"s3://{BUCKET}/other/")
    assert [a["Name"] for a in c["Applications"]] == ["Hadoop", "ZooKeeper"]
    assert c["StepConcurrencyLevel"] == 2
    assert [x["Classification"] for x in c["Configurations"]] == ["yarn-site", "core-site", "hadoop-env"]
    assert c["Configurations"][2]["Configurations"][0]["Properties"] == {"PYTHONUNBUFFERED": "1"}
    groups = {g["InstanceGroupType"]: g for g in
              aws.emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]}
    assert {g["InstanceType"] for g in groups.values()} == {"m5.2xlarge"}
    assert groups["CORE"]["RequestedInstanceCount"] == 3
    assert (groups["TASK"]["Market"], groups["TASK"]["BidPrice"]) == ("SPOT", "0.20")
    assert groups["TASK"]["RequestedInstanceCount"] == 4
    actions = aws.emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert actions[0]["Args"] == [f"{STAGING}/wheels/{sha256_prefix(built_wheel)}/{os.path.basename(built_wheel)}"]
    assert actions[1]["Args"][0] == "--conf-b64" and len(actions[1]["Args"]) == 2
    conf = yaml.safe_load(base64.b64decode(actions[1]["Args"][1]))
    assert conf == {"execution.runtime-mode": "STREAMING", "taskmanager.numberOfTaskSlots": 2}


def test_instance_fleet_with_spot_options_in_the_request(tmp_path):
    with open(STREAMING) as f:
        data = yaml.safe_load(f)
    del data["instance_groups"]
    data["instance_fleets"] = [
        {"role": "MASTER", "on_demand_capacity": 1, "instance_types": [{"instance_type": "m5.xlarge"}]},
        {"role": "CORE", "on_demand_capacity": 2, "instance_types": [{"instance_type": "r5.xlarge"}]},
        {"role": "TASK", "spot_capacity": 8, "instance_types": [
            {"instance_type": "c5.2xlarge", "weight": 2, "bid_percent": 80}],
         "spot": {"timeout_minutes": 10, "timeout_action": "SWITCH_TO_ON_DEMAND",
                  "allocation_strategy": "price-capacity-optimized"}}]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    fleets = request_of(str(path), instance_type="m6i.xlarge", core_instance_count=4)["Instances"]["InstanceFleets"]
    assert fleets[0]["InstanceTypeConfigs"] == [{"InstanceType": "m6i.xlarge", "WeightedCapacity": 1}]
    assert fleets[1]["TargetOnDemandCapacity"] == 4
    assert fleets[1]["InstanceTypeConfigs"][0]["InstanceType"] == "m6i.xlarge"
    assert fleets[2] == {"Name": "Task", "InstanceFleetType": "TASK", "TargetOnDemandCapacity": 0,
                         "TargetSpotCapacity": 8,
                         "InstanceTypeConfigs": [{"InstanceType": "c5.2xlarge", "WeightedCapacity": 2,
                                                  "BidPriceAsPercentageOfOnDemandPrice": 80.0}],
                         "LaunchSpecifications": {"SpotSpecification": {
                             "TimeoutDurationMinutes": 10, "TimeoutAction": "SWITCH_TO_ON_DEMAND",
                             "AllocationStrategy": "price-capacity-optimized"}}}


BAD = [  # (text to replace in emr-batch.yaml, replacement, field named, text on the line the error names)
    ("release_label: emr-7.1.0", "release_label: emr7.1", "release_label", "emr7.1"),
    ("    instance_type: m5.xlarge\n    count: 1", "    instance_type: huge\n    count: 1",
     "instance_groups[0].instance_type", "huge"),
    ("    count: 2", "    count: -1", "instance_groups[1].count", "count: -1"),
    ("log_uri: s3://my-emrflow-bucket/emr-logs/", "log_uri: https://example.com/logs", "log_uri", "https://example.com"),
    ("  - Classification: yarn-site\n    Properties:", "  - Classification: yarn-site\n    Props:",
     "configurations[0].Props", "Props:"),
    ("      parallelism.default: 4", "      parallelism.defualt: 4", "parallelism.defualt", "defualt"),
]


@pytest.mark.parametrize("old,new,field,marker", BAD, ids=[b[2] for b in BAD])
def test_validation_errors_name_file_and_line_before_any_aws_call(tmp_path, counting_endpoint, old, new,
                                                                   field, marker):
    url, requests = counting_endpoint
    with open(BATCH) as f:
        text = f.read()
    assert old in text
    path = tmp_path / "bad.yaml"
    bad = text.replace(old, new)
    path.write_text(bad)
    line = bad[:bad.index(marker)].count("\n") + 1  # the line the bad value sits on
    for command in (["create-cluster", "--config", str(path), "--wheel", "s3://b/w.whl"],
                    ["run-transient", "--config", str(path), "--wheel", "s3://b/w.whl", JOB]):
        r = cli(*command, endpoint=url)
        assert r.exit_code == 1
        assert f"{path}:{line}" in r.stderr and field in r.stderr, r.stderr
    assert requests == []


def test_override_and_argument_errors_name_the_option(counting_endpoint):
    url, requests = counting_endpoint
    r = cli("create-cluster", "--config", BATCH, "--release-label", "emr-7", "--dry-run", endpoint=url)
    assert r.exit_code == 1 and "--release-label" in r.stderr and "emr-X.Y.Z" in r.stderr
    r = cli("create-cluster", "--config", BATCH, "--instance-type", "big", endpoint=url)
    assert r.exit_code == 1 and "--instance-type" in r.stderr
    r = cli("create-cluster", "--config", BATCH, "--s3-staging", "bucket/x", "--wheel", "s3://b/w.whl",
            endpoint=url)
    assert r.exit_code == 1 and "--s3-staging" in r.stderr and "s3://bucket" in r.stderr
    r = cli("add-step", "--cluster-id", "cluster-1", JOB, endpoint=url)
    assert r.exit_code == 1 and "expected j- and capital letters or digits" in r.stderr
    r = cli("list-clusters", "--region", "Mars", endpoint=url)
    assert r.exit_code == 1 and "--region" in r.stderr
    assert requests == []


def test_botocore_errors_become_cluster_errors_with_the_aws_code(aws, moto_endpoint):
    with pytest.raises(ClusterError) as info:
        emr.describe_cluster(aws, "j-DOESNOTEXIST")
    assert info.value.code and info.value.code in str(info.value)
    r = cli("describe-cluster", "j-DOESNOTEXIST", endpoint=moto_endpoint)
    assert r.exit_code == 1 and "DescribeCluster j-DOESNOTEXIST failed" in r.stderr
    with pytest.raises(ClusterError, match="uploading .* failed: NoSuchBucket") as info:
        aws.upload(JOB, "s3://no-such-bucket-here/job.py")
    assert info.value.code == "NoSuchBucket"


# --------------------------------------------------------------------------- steps

def test_add_step_uploads_the_job_and_records_the_emrflow_run_arguments(aws, moto_endpoint, built_wheel):
    cluster_id = new_cluster(aws, built_wheel)
    r = cli("add-step", "--cluster-id", cluster_id, "--name", "latest rating", "--s3-staging", STAGING,
            "--action-on-failure", "CANCEL_AND_WAIT", "-p", "2", "-D", "execution.batch.local-aggregation=false",
            JOB, "--input", "s3://data/ratings.csv", "--output", f"s3://{BUCKET}/out/latest", endpoint=moto_endpoint)
    assert r.exit_code == 0, r.output
    step_id = r.stdout.strip()
    step = aws.emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
    assert step["Name"] == "latest rating" and step["ActionOnFailure"] == "CANCEL_AND_WAIT"
    assert step["Config"]["Jar"] == "command-runner.jar"
    args = step["Config"]["Args"]
    job_uri = args[8]
    assert args[:8] == ["emrflow", "run", "-t", "yarn-per-job", "-p", "2",
                        "-D", "execution.batch.local-aggregation=false"]
    assert job_uri.startswith(f"{STAGING}/jobs/") and job_uri.endswith("/latest_rating.py")
    assert args[9:] == ["--input", "s3://data/ratings.csv", "--output", f"s3://{BUCKET}/out/latest"]
    with open(JOB, "rb") as f:
        assert s3_text(aws, job_uri) == f.read()


def test_add_step_yarn_session(aws, moto_endpoint, built_wheel):
    cluster_id = new_cluster(aws, built_wheel, STREAMING)
    r = cli("add-step", "--cluster-id", cluster_id, "--yarn-session", "--taskmanagers", "4", "--slots", "2",
            endpoint=moto_endpoint)
    assert r.exit_code == 0, r.output
    step = aws.emr.list_steps(ClusterId=cluster_id)["Steps"][0]
    assert step["Name"] == "emrflow yarn-session"
    assert step["Config"]["Args"] == ["emrflow", "yarn-session", "start", "--detached",
                                      "--taskmanagers", "4", "--slots", "2"]


TEMPLATE_JOB = "s3://my-emrflow-bucket/emrflow/jobs/latest_rating.py"
TEMPLATE_IO = ["--input", "s3://my-emrflow-bucket/data/ratings.csv", "--output"]
#: steps/<template> -> the add-step arguments (after --cluster-id) that add the same steps, in order
TEMPLATES = {
    "emrflow-job.json": [["-p", "2", TEMPLATE_JOB, *TEMPLATE_IO, "s3://my-emrflow-bucket/out/latest-rating"]],
    "yarn-session.json": [["--yarn-session", "--taskmanagers", "2", "--slots", "4"],
                          ["-t", "yarn-session", "-p", "8", TEMPLATE_JOB, *TEMPLATE_IO,
                           "s3://my-emrflow-bucket/out/latest-rating-session"]],
}


def test_every_step_template_is_listed():
    assert sorted(f for f in os.listdir(STEPS_DIR) if f.endswith(".json")) == sorted(TEMPLATES)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_step_templates_are_what_add_step_sends(template, counting_endpoint):
    """steps/*.json (the AWS CLI's --steps shape) equal what `add-step --dry-run` would send."""
    url, requests = counting_endpoint
    produced = []
    for add_step_args in TEMPLATES[template]:
        r = cli("add-step", "--cluster-id", "j-TEMPLATE", "--dry-run", *add_step_args, endpoint=url)
        assert r.exit_code == 0, r.output
        body, _, line = r.stdout.rpartition("}\n")
        request = json.loads(body + "}")
        words = shlex.split(line)
        assert words[:5] == ["aws", "emr", "add-steps", "--cluster-id", "j-TEMPLATE"]
        cli_steps = json.loads(words[words.index("--steps") + 1])
        assert cli_steps == [emr.aws_cli_step(s) for s in request["Steps"]]
        produced += cli_steps
    with open(os.path.join(STEPS_DIR, template)) as f:
        assert json.load(f) == produced
    assert requests == []                                    # --dry-run calls nothing


S3_JOB = """import json, sys
from emrflow import StreamExecutionEnvironment
env = StreamExecutionEnvironment.get_execution_environment()
doubled = sorted(env.from_collection([1, 2, 3]).map(lambda x: 2 * x).execute_and_collect())
with open(sys.argv[1], "w") as f:
    json.dump({"argv": sys.argv[1:], "file": __file__, "doubled": doubled}, f)
"""


def test_emrflow_run_takes_an_s3_job_script(aws, moto_endpoint, tmp_path):
    (tmp_path / "s3_job.py").write_text(S3_JOB)
    uri = f"s3://{BUCKET}/jobs/run-test/s3_job.py"
    aws.upload(str(tmp_path / "s3_job.py"), uri)
    out = tmp_path / "result.json"
    env = dict(os.environ, **FAKE_ENV, AWS_ENDPOINT_URL=moto_endpoint)
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", "run", "-q", uri, str(out), "two words"],
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["argv"] == [str(out), "two words"] and result["doubled"] == [2, 4, 6]
    assert os.path.basename(result["file"]) == "s3_job.py" and result["file"] != str(tmp_path / "s3_job.py")
    assert not os.path.exists(os.path.dirname(result["file"]))       # the download is cleaned up

    runner = CliRunner()
    for job, expected in ((f"s3://{BUCKET}/jobs/no-such-job.py", "404"),
                          ("s3://bucket-only", "s3://bucket/key")):
        r = runner.invoke(main, ["run", job], env={"AWS_ENDPOINT_URL": moto_endpoint})
        assert r.exit_code == 1 and job in r.stderr and expected in r.stderr, r.stderr


def _fail_step_later(aws, log_uri, find_cluster, stderr_text: bytes):
    """In a thread: once the cluster and its last step exist, put a gzip'd stderr at the log URI
    and terminate the cluster (moto never ends steps by itself)."""
    def run():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cluster_id = find_cluster()
            steps = aws.emr.list_steps(ClusterId=cluster_id)["Steps"] if cluster_id else []
            if steps:
                prefix = emr.step_log_prefix(log_uri, cluster_id, steps[0]["Id"])
                bucket, key = emr.split_s3_uri(prefix + "stderr.gz")
                aws.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(stderr_text))
                aws.emr.terminate_job_flows(JobFlowIds=[cluster_id])
                return
            time.sleep(0.05)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


STDERR = b"""Job 'latest rating' submitted with JobID 4f2a
Traceback (most recent call last):
  File "/mnt/tmp/job.py", line 3, in <module>
    import missing
ModuleNotFoundError: an earlier failure
Traceback (most recent call last):
  File "/opt/emrflow/venv/lib/python3.11/site-packages/emrflow/runtime/task.py", line 88, in run
    self.operator.process_batch(batch)
  File "latest_rating.py", line 40, in later
    if b[3] > a[3]:
TypeError: '>' not supported between instances of 'str' and 'int'
Command exiting with ret '1'
"""


def test_add_step_wait_diagnoses_the_failure_from_the_step_logs(aws, moto_endpoint, built_wheel):
    cluster_id = new_cluster(aws, built_wheel)
    emr.add_steps(aws, cluster_id, [emr.session_step()])
    log_uri = aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["LogUri"]
    job_uri = f"{STAGING}/jobs/x/latest_rating.py"

    def newest_step_cluster():
        steps = aws.emr.list_steps(ClusterId=cluster_id)["Steps"]
        return cluster_id if len(steps) == 2 else None
    t = _fail_step_later(aws, log_uri, newest_step_cluster, STDERR)
    r = cli("add-step", "--cluster-id", cluster_id, "--wait", "--poll", "0.1", job_uri, endpoint=moto_endpoint)
    t.join()
    assert r.exit_code == 1
    step_id = r.stdout.strip()
    # moto keeps a step queued behind another PENDING for ever (EMR would have run it by then):
    # the message gives the state EMR recorded when the cluster ended under the step
    recorded = aws.emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]["State"]
    assert recorded == "PENDING"
    assert f"step 2 of 2 'emrflow latest_rating.py' ({step_id}) of cluster {cluster_id} ended {recorded} " \
           "when the cluster ended TERMINATED" in r.stderr
    assert "TypeError: '>' not supported between instances of 'str' and 'int'" in r.stderr
    assert 'File "latest_rating.py", line 40, in later' in r.stderr
    assert "ModuleNotFoundError" not in r.stderr and "Command exiting" not in r.stderr
    assert f"step logs: {log_uri}{cluster_id}/steps/{step_id}/" in r.stderr


def test_diagnosis_without_traceback_shows_the_last_lines_and_missing_logs_say_so():
    from emrflow.deploy.emr.logs import StepLogs
    logs = StepLogs("s3://b/l/j-1/steps/s-1/", {"stderr": "\n".join(f"line {i}" for i in range(100))})
    text = logs.diagnosis()
    assert "last lines of s3://b/l/j-1/steps/s-1/stderr.gz" in text and "line 99" in text and "line 74" not in text
    assert "no step logs at s3://b/l/j-1/steps/s-1/ yet" in StepLogs("s3://b/l/j-1/steps/s-1/").diagnosis()


def test_run_transient_runs_the_job_as_the_only_step_of_a_cluster_that_ends(aws, moto_endpoint, built_wheel):
    name = f"transient-{time.monotonic_ns()}"

    def find():
        return next((c["Id"] for c in aws.emr.list_clusters()["Clusters"] if c["Name"] == name), None)
    t = _fail_step_later(aws, f"s3://{BUCKET}/emr-logs/", find, STDERR)
    r = cli("run-transient", "--config", BATCH, "--name", name, "--wheel", built_wheel, "--poll", "0.1",
            "-p", "2", JOB, "--output", f"s3://{BUCKET}/out/t", endpoint=moto_endpoint)
    t.join()
    assert r.exit_code == 1
    cluster_id = find()
    c = aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert c["AutoTerminate"] is True                          # KeepJobFlowAliveWhenNoSteps false
    assert c["Status"]["State"] == "TERMINATED"
    steps = aws.emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert len(steps) == 1 and steps[0]["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert steps[0]["Config"]["Args"][:6] == ["emrflow", "run", "-t", "yarn-per-job", "-p", "2"]
    assert f"cluster {cluster_id} created (transient" in r.stderr
    assert "step 1 of 1" in r.stderr and "TypeError" in r.stderr
    assert f"step logs: s3://{BUCKET}/emr-logs/{cluster_id}/steps/{steps[0]['Id']}/" in r.stderr
    request = request_of(BATCH)
    transient = emr.build_run_job_flow_request(emr.load_cluster_spec(BATCH), emr.Staging(STAGING, wheel_uri="s3://b/w.whl"),
                                               transient=True)
    assert "AutoTerminationPolicy" in request and "AutoTerminationPolicy" not in transient


def test_run_transient_ctrl_c_asks_whether_to_terminate(aws, moto_endpoint, built_wheel):
    import _thread
    name = f"interrupted-{time.monotonic_ns()}"

    def find():
        return next((c["Id"] for c in aws.emr.list_clusters()["Clusters"] if c["Name"] == name), None)

    def interrupt():                 # Ctrl-C while the command follows the step
        deadline = time.monotonic() + 30
        while not find() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        _thread.interrupt_main()
    t = threading.Thread(target=interrupt, daemon=True)
    t.start()
    r = CliRunner().invoke(main, ["run-transient", "--endpoint-url", moto_endpoint, "--config", BATCH,
                                  "--name", name, "--wheel", built_wheel, "--poll", "0.1", JOB], input="y\n")
    t.join()
    cluster_id = find()
    assert r.exit_code == 130, r.output
    assert f"Terminate cluster {cluster_id}? [Y/n]" in r.stderr and f"Terminating {cluster_id}." in r.stderr
    assert aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == "TERMINATED"


# --------------------------------------------------------------------------- list / describe / terminate

def test_list_describe_list_steps_terminate(aws, moto_endpoint, built_wheel):
    cluster_id = new_cluster(aws, built_wheel, name="tables-test")
    emr.add_steps(aws, cluster_id, [emr.session_step(taskmanagers=2)])
    r = cli("list-clusters", "--active", endpoint=moto_endpoint)
    assert r.exit_code == 0 and r.stdout.splitlines()[0].split() == ["ID", "NAME", "STATE", "CREATED"]
    row = next(line for line in r.stdout.splitlines() if line.startswith(cluster_id))
    assert "tables-test" in row and "RUNNING" in row
    r = cli("describe-cluster", cluster_id, endpoint=moto_endpoint)
    assert r.exit_code == 0
    fields = {line[:15].strip(): line[15:].strip() for line in r.stdout.splitlines()[1:]}
    assert fields["Name"] == "tables-test" and fields["Release label"] == "emr-7.1.0"
    assert fields["Steps"] == "1" and fields["Log URI"] == f"s3://{BUCKET}/emr-logs/"
    r = cli("list-steps", cluster_id, endpoint=moto_endpoint)
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].split()[:4] == ["#", "ID", "NAME", "STATE"]
    assert "emrflow yarn-session" in r.stdout.splitlines()[1]
    r = cli("terminate-cluster", cluster_id, endpoint=moto_endpoint)
    assert r.exit_code == 0 and f"Terminating {cluster_id}." in r.stdout
    assert aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == "TERMINATED"
    r = cli("list-clusters", "--active", endpoint=moto_endpoint)
    assert cluster_id not in r.stdout
    assert cluster_id in cli("list-clusters", endpoint=moto_endpoint).stdout


# --------------------------------------------------------------------------- the step command runs

def latest_rating_reference(path: str) -> set[str]:
    """The expected output lines of examples/latest_rating.py, computed in plain Python: per
    (movieId, userId) the rating with the greatest timestamp (the higher rating on a tie)."""
    latest: dict[tuple[int, int], tuple[int, float]] = {}
    with open(path) as f:
        next(f)
        for line in f:
            user, movie, rating, ts = line.rstrip("\n").split(",")
            key, value = (int(movie), int(user)), (int(ts), float(rating))
            if key not in latest or value > latest[key]:
                latest[key] = value
    return {f"{m},{u},{format(r, 'g')},{t}" for (m, u), (t, r) in latest.items()}


def test_the_recorded_step_command_runs_latest_rating(aws, moto_endpoint, built_wheel, tmp_path):
    """Run the command-runner.jar arguments add-step recorded, unchanged but for ``-t local``:
    the job script, its input and its output are S3 URIs, as on the cluster."""
    cluster_id = new_cluster(aws, built_wheel)
    in_uri, out_uri = f"s3://{BUCKET}/data/ratings.csv", f"s3://{BUCKET}/out/recorded-step"
    aws.upload(RATINGS, in_uri)
    r = cli("add-step", "--cluster-id", cluster_id, "--s3-staging", STAGING, "-p", "2", JOB,
            "--input", in_uri, "--output", out_uri, endpoint=moto_endpoint)
    assert r.exit_code == 0, r.output
    config = aws.emr.describe_step(ClusterId=cluster_id, StepId=r.stdout.strip())["Step"]["Config"]
    assert config["Jar"] == "command-runner.jar"
    args = config["Args"]
    t = args.index("-t") + 1
    assert args[:2] == ["emrflow", "run"] and args[t] == "yarn-per-job"
    local = args[:t] + ["local"] + args[t + 1:]
    job_uri = next(a for a in local if a.endswith("/latest_rating.py"))
    assert job_uri.startswith(f"{STAGING}/jobs/") and [a for a in local if a.startswith("s3://")] == [
        job_uri, in_uri, out_uri]

    env = dict(os.environ, **FAKE_ENV, AWS_ENDPOINT_URL=moto_endpoint)
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", *local[1:]], capture_output=True,
                          text=True, timeout=120, cwd=str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr

    listed = aws.s3.list_objects_v2(Bucket=BUCKET, Prefix="out/recorded-step/").get("Contents", [])
    names = sorted(o["Key"].rsplit("/", 1)[-1] for o in listed)
    parts = [n for n in names if n.startswith("part-")]
    assert [re.sub(r"\..*$", "", n) for n in parts] == ["part-0-0", "part-1-0"], names
    assert not [n for n in names if "inprogress" in n], names      # nothing half-written stays
    header, rows = "movieId,userId,rating,timestamp", []
    for name in parts:
        lines = aws.read(f"{out_uri}/{name}").decode().splitlines()
        assert lines[0] == header
        rows += lines[1:]
    expected = latest_rating_reference(RATINGS)
    assert len(rows) == len(expected) > 1000
    assert set(rows) == expected


def test_fetch_job_script_errors(aws, tmp_path):
    with pytest.raises(ConfigError, match="s3://bucket/key"):
        emr.fetch_job_script("s3://bucket-only", str(tmp_path), aws)
    with pytest.raises(ClusterError, match="downloading the job script"):
        emr.fetch_job_script(f"s3://{BUCKET}/no/such/job.py", str(tmp_path), aws)


# --------------------------------------------------------------------------- staging an installed emrflow

def _installed_layout(wheel: str, root) -> str:
    """Unpack ``wheel`` into ``root/site`` as pip lays a wheel out (a site-packages directory)."""
    import zipfile
    site = root / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return str(site)


def _emrflow_from(site: str, cwd, endpoint: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m emrflow.cli ARGS`` with only ``site`` (no checkout) providing emrflow."""
    env = dict(os.environ, **FAKE_ENV, PYTHONPATH=site, AWS_ENDPOINT_URL=endpoint)
    code = ("import sys, emrflow, emrflow.cli as c; "
            "assert emrflow.__file__.startswith(sys.argv[1]), emrflow.__file__; "
            "sys.argv = ['emrflow', *sys.argv[2:]]; c.main()")
    return subprocess.run([sys.executable, "-c", code, site, *args], capture_output=True, text=True,
                          timeout=120, cwd=str(cwd), env=env)


def test_installed_emrflow_stages_itself_and_finds_its_templates(aws, moto_endpoint, built_wheel, tmp_path):
    """From an installed layout (no checkout): --config by template name, the wheel repacked from
    the installed files under a content-addressed key, the bootstrap scripts from the package."""
    site = _installed_layout(built_wheel, tmp_path)
    staging = f"s3://{BUCKET}/installed-{time.monotonic_ns()}"
    runs = [_emrflow_from(site, tmp_path, moto_endpoint, "create-cluster", "--config", "emr-batch",
                          "--s3-staging", staging) for _ in range(2)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    actions = aws.emr.list_bootstrap_actions(ClusterId=runs[0].stdout.split()[-1])["BootstrapActions"]
    wheel_uri = actions[0]["Args"][0]
    second = aws.emr.list_bootstrap_actions(ClusterId=runs[1].stdout.split()[-1])["BootstrapActions"]
    assert second[0]["Args"][0] == wheel_uri                  # the same install, the same key
    staged = aws.read(wheel_uri)
    assert wheel_uri == f"{staging}/wheels/{hashlib.sha256(staged).hexdigest()[:16]}/{emr.expected_wheel_name()}"
    for name in ("install-emrflow.sh", "write-emrflow-conf.sh"):
        with open(os.path.join(ROOT, "bootstrap", name), "rb") as f:
            assert aws.read(f"{staging}/bootstrap/{name}") == f.read()
    import io
    import zipfile
    with zipfile.ZipFile(io.BytesIO(staged)) as zf, zipfile.ZipFile(built_wheel) as original:
        # the repacked install holds what the built wheel holds, file for file
        assert sorted(zf.namelist()) == sorted(original.namelist())
        for name in original.namelist():
            if not name.endswith("/RECORD"):
                assert zf.read(name) == original.read(name), name
        assert {"emrflow/__init__.py", "emrflow/_data/bootstrap/install-emrflow.sh",
                "emrflow/_data/configs/emr-batch.yaml", "emrflow/_data/steps/emrflow-job.json",
                "emrflow/_data/examples/latest_rating.py"} <= set(zf.namelist())
    r = _emrflow_from(site, tmp_path, moto_endpoint, "resources")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{k}\t{os.path.join(site, 'emrflow', '_data', k)}"
                                     for k in ("bootstrap", "configs", "steps", "examples")]
    r = _emrflow_from(site, tmp_path, moto_endpoint, "create-cluster", "--config", "configs/emr-batch.yaml",
                      "--dry-run")
    assert r.returncode == 1
    assert "cluster spec not found: configs/emr-batch.yaml" in r.stderr and "emr-batch, emr-streaming" in r.stderr


def test_installed_emrflow_missing_file_fails_before_any_upload(aws, moto_endpoint, built_wheel, tmp_path):
    """A bootstrap script missing from the install: a clear error naming it, and S3 stays empty."""
    site = _installed_layout(built_wheel, tmp_path)
    missing = os.path.join(site, "emrflow", "_data", "bootstrap", "write-emrflow-conf.sh")
    os.remove(missing)
    bucket = f"empty-{time.monotonic_ns()}"
    aws.s3.create_bucket(Bucket=bucket)
    clusters = len(aws.emr.list_clusters()["Clusters"])
    # with a given wheel: the bootstrap script is found missing before the wheel is uploaded
    proc = _emrflow_from(site, tmp_path, moto_endpoint, "create-cluster", "--config", "emr-batch",
                         "--s3-staging", f"s3://{bucket}/staging", "--wheel", built_wheel)
    assert proc.returncode == 1
    assert f"Error: emrflow's bootstrap script not found: {missing} (nothing was uploaded)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert aws.s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    # staging itself: repacking the install finds the file its RECORD lists missing
    proc = _emrflow_from(site, tmp_path, moto_endpoint, "create-cluster", "--config", "emr-batch",
                         "--s3-staging", f"s3://{bucket}/staging")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"Error: the installed emrflow is incomplete: {missing}: No such file" in proc.stderr
    assert aws.s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert len(aws.emr.list_clusters()["Clusters"]) == clusters            # no RunJobFlow either

    proc = _emrflow_from(site, tmp_path, moto_endpoint, "create-cluster", "--config", "emr-batch",
                         "--s3-staging", f"s3://{bucket}/staging", "--wheel", str(tmp_path / "nope.whl"))
    assert proc.returncode == 1 and "--wheel: expected a .whl file" in proc.stderr and "no such file" in proc.stderr
    assert aws.s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_wheel_index_installs_this_version_from_the_package_index(counting_endpoint):
    url, requests = counting_endpoint
    from emrflow import __version__
    r = cli("create-cluster", "--config", "emr-batch", "--wheel", "index", "--dry-run", endpoint=url)
    assert r.exit_code == 0, r.output
    request = json.loads(r.stdout.rpartition("}\n")[0] + "}")
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"] == [f"emrflow=={__version__}"]
    r = cli("create-cluster", "--config", "emr-batch", "--wheel", "s3://bkt/emrflow.whl", "--dry-run", endpoint=url)
    assert r.exit_code == 1 and "NAME-VERSION-PYTHON-ABI-PLATFORM.whl" in r.stderr
    assert requests == []
