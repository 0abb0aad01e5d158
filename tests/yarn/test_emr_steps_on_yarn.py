"""EMR steps, end to end: a cluster from each template on moto (server mode), a step added with
``emrflow add-step``, and the step's recorded ``command-runner.jar`` arguments run unchanged on the
real YARN of the test suite (Hadoop's MiniYARNCluster), with the job script, input and output in S3.

The step runs on a node that emrflow's own bootstrap actions set up, as EMR runs them: the
cluster's recorded ``BootstrapActions`` (``install-emrflow.sh`` with the staged wheel,
``write-emrflow-conf.sh`` with the spec's ``emrflow-conf`` classification), each script copied
from S3 and run with its recorded arguments by the AWS CLI and bash, under
``EMRFLOW_BOOTSTRAP_ROOT`` (a directory standing for ``/``, so the machine's system directories
stay untouched). So ``emrflow`` is the bootstrap's wrapper in ``usr/local/bin``, running the
virtual environment the script made from the system ``python3``, which itself has no emrflow;
its configuration is what the classification says (S3 endpoint and keys for moto here; on AWS
the instance role). The step also has the Hadoop client's environment (``yarn``,
``HADOOP_CONF_DIR``) and AWS credentials (an instance role's, here moto's fake ones). YARN
containers get only YARN's whitelisted variables, so what they need of S3 must come through
emrflow's configuration.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.conftest_emr import BUCKET, FAKE_ENV

pytestmark = [pytest.mark.yarn, pytest.mark.integration]

JOB = os.path.join(ROOT, "examples", "latest_rating.py")
RATINGS = os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv")
STAGING = f"s3://{BUCKET}/emrflow/staging"
SMALL = ["-D", "jobmanager.memory.process.size=512m", "-D", "taskmanager.memory.process.size=512m"]


def emrflow(*args, endpoint, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", *args[:1], "--endpoint-url", endpoint, *args[1:]],
                          capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def reference() -> set[str]:
    best: dict = {}
    with open(RATINGS, newline="") as f:
        for user, movie, rating, ts in list(csv.reader(f))[1:]:
            key, rank = (movie, user), (int(ts), float(rating))
            if key not in best or rank > best[key][0]:
                best[key] = (rank, f"{movie},{user},{rating},{ts}")
    return {line for _, line in best.values()}


def s3_rows(aws, uri: str) -> list[str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    names = [o["Key"] for o in listed]
    assert not [n for n in names if "inprogress" in n], names
    rows = []
    for key in names:
        if key.rsplit("/", 1)[-1].startswith("part-"):
            lines = aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
            assert lines[0] == "movieId,userId,rating,timestamp"
            rows += lines[1:]
    return rows


AWS_CLI = os.path.join(ROOT, "tests", "yarn", "target", "awscli", "bin", "aws")   # .ci/fetch-awscli


@pytest.fixture(scope="module")
def node_root(tmp_path_factory):
    """The node's ``/`` for emrflow's bootstrap actions: one per module, so the second cluster's
    install-emrflow.sh reuses the virtual environment, as a rerun on a node does."""
    if not os.access(AWS_CLI, os.X_OK):
        pytest.fail("the AWS CLI of the bootstrap actions is missing: run .ci/fetch-awscli")
    return tmp_path_factory.mktemp("node")


@pytest.fixture
def node(yarn_cluster, moto_endpoint, node_root, tmp_path):
    """The environment of a step's process on the EMR primary node, as a dict for subprocess."""
    aws_bin = node_root / "aws-cli"          # the CLI alone, not its virtual environment's python3
    aws_bin.mkdir(exist_ok=True)
    if not (aws_bin / "aws").exists():
        os.symlink(AWS_CLI, aws_bin / "aws")
    env = {"PATH": f"{node_root}/usr/local/bin:{aws_bin}:"
                   f"{yarn_cluster.env['PATH'].split(os.pathsep)[0]}:/usr/bin:/bin",
           "HOME": str(tmp_path), "LANG": "C.UTF-8", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ENDPOINT_URL": moto_endpoint, **FAKE_ENV}
    env.update({k: v for k, v in yarn_cluster.env.items() if k != "PATH"})
    # the system python3 of the node has no emrflow
    probe = subprocess.run(["python3", "-c", "import emrflow"], env=env, capture_output=True)
    assert probe.returncode != 0
    return env


def bootstrap(aws, cluster_id: str, node: dict, node_root) -> None:
    """Run the cluster's recorded bootstrap actions on the node, as EMR does: copy each script
    from S3, run it with its arguments (under EMRFLOW_BOOTSTRAP_ROOT instead of /)."""
    actions = aws.emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert [a["ScriptPath"].rsplit("/", 1)[-1] for a in actions] == ["install-emrflow.sh", "write-emrflow-conf.sh"]
    pip_cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                               text=True).stdout.strip()
    env = dict(node, EMRFLOW_BOOTSTRAP_ROOT=str(node_root), PIP_DISABLE_PIP_VERSION_CHECK="1",
               **({"PIP_CACHE_DIR": pip_cache} if pip_cache else {}))
    for action in actions:
        script = str(node_root / action["ScriptPath"].rsplit("/", 1)[-1])
        subprocess.run([AWS_CLI, "s3", "cp", "--only-show-errors", action["ScriptPath"], script], env=env,
                       check=True, timeout=120)
        proc = subprocess.run(["bash", script, *action.get("Args", [])], env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, f"{action['Name']}: {proc.stderr[-3000:]}"
    assert os.access(node_root / "usr" / "local" / "bin" / "emrflow", os.X_OK)


def add_step(aws, moto_endpoint, cluster_id: str, *args) -> tuple[str, list[str]]:
    proc = emrflow("add-step", "--cluster-id", cluster_id, "--s3-staging", STAGING, *args, endpoint=moto_endpoint)
    step_id = proc.stdout.strip().splitlines()[-1]
    config = aws.emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Config"]
    assert config["Jar"] == "command-runner.jar" and config["Args"][0] == "emrflow"
    return step_id, config["Args"]


def run_step(args: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
    """command-runner.jar runs the arguments as a command on the primary node."""
    return subprocess.run(args, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=400)


def new_cluster(aws, moto_endpoint, built_wheel, template: str, node: dict, node_root, tmp_path) -> str:
    """A cluster from ``template`` whose emrflow-conf classification adds what an S3 outside AWS
    needs (on AWS the instance role and region need none of it), with its bootstrap actions run."""
    from emrflow.resources import resource_file
    with open(resource_file("configs", f"{template}.yaml")) as f:
        spec = yaml.safe_load(f)
    conf = next(c for c in spec["configurations"] if c["Classification"] == "emrflow-conf")
    conf["Properties"].update({
        "s3.endpoint": moto_endpoint, "s3.endpoint.region": "us-east-1",
        "s3.access-key": FAKE_ENV["AWS_ACCESS_KEY_ID"], "s3.secret-key": FAKE_ENV["AWS_SECRET_ACCESS_KEY"],
        "jobmanager.memory.process.size": "512m", "taskmanager.memory.process.size": "512m"})
    path = tmp_path / f"{template}.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = emrflow("create-cluster", "--config", str(path), "--s3-staging", STAGING, "--wheel", built_wheel,
                   endpoint=moto_endpoint)
    cluster_id = proc.stdout.strip().splitlines()[-1].split()[0]
    bootstrap(aws, cluster_id, node, node_root)
    return cluster_id


def test_per_job_step_of_the_batch_template_runs_unchanged_on_yarn(aws, moto_endpoint, built_wheel, node,
                                                                   node_root, yarn_apps, tmp_path):
    cluster_id = new_cluster(aws, moto_endpoint, built_wheel, "emr-batch", node, node_root, tmp_path)
    assert cluster_id.startswith("j-")
    in_uri, out_uri = f"s3://{BUCKET}/data/ratings.csv", f"s3://{BUCKET}/out/step-on-yarn"
    aws.upload(RATINGS, in_uri)
    _, args = add_step(aws, moto_endpoint, cluster_id, "-p", "2", JOB, "--input", in_uri, "--output", out_uri)
    assert args[:4] == ["emrflow", "run", "-t", "yarn-per-job"]
    proc = run_step(args, node, tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = s3_rows(aws, out_uri)
    assert len(rows) == len(set(rows)) and set(rows) == reference()
    assert [r.state for r in yarn_apps.running()] == []


def test_session_step_then_session_job_step_of_the_streaming_template(aws, moto_endpoint, built_wheel, node,
                                                                       node_root, yarn_apps, tmp_path):
    cluster_id = new_cluster(aws, moto_endpoint, built_wheel, "emr-streaming", node, node_root, tmp_path)
    in_uri, out_uri = f"s3://{BUCKET}/data/ratings.csv", f"s3://{BUCKET}/out/session-step-on-yarn"
    aws.upload(RATINGS, in_uri)
    _, session_args = add_step(aws, moto_endpoint, cluster_id, "--yarn-session", "--taskmanagers", "1",
                               "--slots", "2")
    _, job_args = add_step(aws, moto_endpoint, cluster_id, "-t", "yarn-session", "-p", "2", JOB,
                           "--input", in_uri, "--output", out_uri)
    assert session_args[:4] == ["emrflow", "yarn-session", "start", "--detached"]
    started = run_step(session_args, node, tmp_path)
    assert started.returncode == 0, started.stderr
    try:
        ran = run_step(job_args, node, tmp_path)
        assert ran.returncode == 0, ran.stderr
    finally:
        stopped = run_step(["emrflow", "yarn-session", "stop"], node, tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    rows = s3_rows(aws, out_uri)
    assert len(rows) == len(set(rows)) and set(rows) == reference()


def test_failing_step_diagnosis_shows_the_users_traceback(aws, moto_endpoint, built_wheel, node, node_root,
                                                         yarn_apps, tmp_path):
    from emrflow.deploy.emr import step_failure
    cluster_id = new_cluster(aws, moto_endpoint, built_wheel, "emr-batch", node, node_root, tmp_path)
    job = tmp_path / "broken_job.py"
    job.write_text("from emrflow import StreamExecutionEnvironment\n"
                   "\n"
                   "def parse(v):\n"
                   "    return int(v)\n"
                   "\n"
                   "env = StreamExecutionEnvironment.get_execution_environment()\n"
                   "env.from_collection(['1', 'x']).map(parse).print()\n"
                   "env.execute('broken')\n")
    step_id, args = add_step(aws, moto_endpoint, cluster_id, str(job))
    proc = run_step(args, node, tmp_path)
    assert proc.returncode == 1
    assert "ValueError: invalid literal for int() with base 10: 'x'" in proc.stderr
    assert "return int(v)" in proc.stderr and "Traceback" in proc.stderr
    # EMR copies the step's stderr to the cluster's log URI; the diagnosis reads it from there
    log_uri = aws.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["LogUri"].rstrip("/")
    bucket, _, prefix = log_uri[len("s3://"):].partition("/")
    with contextlib.suppress(aws.s3.exceptions.BucketAlreadyOwnedByYou):
        aws.s3.create_bucket(Bucket=bucket)
    key = f"{prefix}/{cluster_id}/steps/{step_id}/stderr.gz".lstrip("/")
    aws.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(proc.stderr.encode()))
    text = str(step_failure(aws, cluster_id, step_id, "FAILED"))      # what add-step --wait prints
    assert f"({step_id}) of cluster {cluster_id} ended FAILED" in text, text
    assert "ValueError: invalid literal for int() with base 10: 'x'" in text and "return int(v)" in text, text
