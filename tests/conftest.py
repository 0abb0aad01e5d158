"""Shared test configuration: markers, --runslow, process-leak guard, working-tree guard."""

from __future__ import annotations

import os
import subprocess
import time

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def _load_minicluster():
    """tests/yarn/minicluster.py, loaded by path (tests/ is no package)."""
    import importlib.util
    import sys

    name = "emrflow_tests_minicluster"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tests", "yarn", "minicluster.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pytest_assertrepr_compare(config, op, left, right):
    """A short account of ``==`` between two large collections (over 1,000 items).

    pytest's own diff is quadratic (difflib): on the 900,000-line outputs the
    exactly-once tests compare, it ran past the test timeout instead of saying
    what differs. This says how many items are missing and extra, with samples.
    """
    import collections
    if op != "==" or not all(isinstance(x, (list, tuple, set, frozenset, dict)) for x in (left, right)):
        return None
    if max(len(left), len(right)) <= 1000:
        return None
    if isinstance(left, dict) and isinstance(right, dict) and not isinstance(left, collections.Counter):
        left, right = collections.Counter(left.items()), collections.Counter(right.items())
    else:
        left, right = collections.Counter(left), collections.Counter(right)
    extra, missing = left - right, right - left
    lines = [f"left has {sum(left.values())} items, right has {sum(right.values())}: "
             f"{sum(missing.values())} missing from left, {sum(extra.values())} extra in left"]
    for name, diff in (("missing", missing), ("extra", extra)):
        sample = sorted(diff.items(), key=repr)[:15]
        if sample:
            lines.append(f"{name} (first {len(sample)} of {len(diff)} distinct, item: times): "
                         + ", ".join(f"{k!r}: {n}" for k, n in sample))
    return lines


#: tests that share one expensive session fixture run on one pytest-xdist worker (``--dist
#: loadgroup``), so the server starts once: file name prefix -> group
_XDIST_GROUPS = (("tests/yarn/", "yarn"), ("tests/integration/test_kafka", "kafka"),
                 ("tests/integration/test_streaming_example", "kafka"),   # Kafka and PostgreSQL
                 ("tests/integration/test_jdbc", "postgres"))


def pytest_collection_modifyitems(config, items):
    runslow = config.getoption("--runslow")
    no_yarn = _load_minicluster().unavailable_reason()
    for item in items:
        rel = os.path.relpath(str(item.fspath), ROOT).replace(os.sep, "/")
        group = next((g for prefix, g in _XDIST_GROUPS if rel.startswith(prefix)), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        if "slow" in item.keywords and not runslow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))
        if "yarn" in item.keywords and no_yarn:
            item.add_marker(pytest.mark.skip(reason=f"yarn: {no_yarn}"))
    # the longest group first: xdist hands out work in collection order, and the YARN group
    # (several minutes on one worker) would otherwise start last and run alone at the end
    order = {g: i for i, (_prefix, g) in enumerate(_XDIST_GROUPS)}
    items.sort(key=lambda it: next((order[m.args[0]] for m in it.iter_markers("xdist_group")), len(order)))


@pytest.fixture(scope="session")
def yarn_cluster(tmp_path_factory):
    """A real YARN for the test run: Hadoop's MiniYARNCluster (1 ResourceManager, 2 NodeManagers
    of 4096 MiB and 4 vcores, physical-memory check on, queues ``default`` and ``small``) on a
    MiniDFSCluster, started once, stopped at the end with every container process (see
    tests/yarn/minicluster.py). Tests that use it are marked ``yarn``; they are skipped with the
    reason when the jars (``.ci/fetch-yarn-jars``) or Java are missing.
    """
    minicluster = _load_minicluster()
    reason = minicluster.unavailable_reason()
    if reason:
        pytest.skip(f"yarn: {reason}")
    # nm_web: the NodeManagers' REST API serves running containers' logs (tests/yarn/test_yarn_logs_live.py)
    cluster = minicluster.MiniYarnCluster(str(tmp_path_factory.mktemp("miniyarn")), nm_web=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def yarn_env(yarn_cluster, monkeypatch) -> dict[str, str]:
    """Points this process at :func:`yarn_cluster` (``skein.Client()`` works in the test) and returns
    the environment for a client subprocess (``subprocess.run(..., env=yarn_env)``)."""
    for key, value in yarn_cluster.env.items():
        monkeypatch.setenv(key, value)
    return dict(os.environ)


def cluster_processes() -> list[psutil.Process]:
    """emrflow runtime processes (JobManager, TaskManager, slot) descended from this test run."""
    me = psutil.Process()
    out = []
    for p in me.children(recursive=True):
        try:
            if any("emrflow.runtime" in part for part in p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def emrflow_processes_anywhere(marker: str) -> list[psutil.Process]:
    """Every process on the machine whose command line contains ``marker``."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                out.append(p)
        except psutil.Error:
            pass
    return out


#: not watched by :func:`working_tree_untouched`: caches, environments, build metadata, the Maven build
_UNWATCHED_DIRS = {".git", ".pytest_cache", "__pycache__", ".mypy_cache", ".ruff_cache"}
_UNWATCHED_PATHS = {os.path.join("tests", "yarn", "target"), os.path.join("tests", "kafka", "target")}
#: files people create, move and delete while tests run; tests do not write these
_SOURCE_SUFFIXES = (".py", ".md", ".toml", ".java", ".sh", ".yaml", ".yml", ".cfg", ".ini", ".xml", ".html", ".typed")


def working_tree_files(root: str = ROOT) -> dict[str, tuple[int, int]]:
    """``{path relative to root: (size, mtime_ns)}`` of the checkout's files and directories (``dir/``).

    Caches, virtual environments, ``*.egg-info`` and the Maven build of ``tests/yarn`` are left out.
    """
    files = {}
    for d, dirs, names in os.walk(root):
        rel = os.path.relpath(d, root)
        dirs[:] = [x for x in dirs if x not in _UNWATCHED_DIRS and not x.startswith(".venv")
                   and not x.endswith(".egg-info") and os.path.normpath(os.path.join(rel, x)) not in _UNWATCHED_PATHS]
        for name in dirs:
            files[os.path.normpath(os.path.join(rel, name)) + os.sep] = (0, 0)  # directories: only whether they exist
        for name in names:
            path = os.path.normpath(os.path.join(rel, name))
            try:
                st = os.lstat(os.path.join(d, name))
            except FileNotFoundError:
                continue
            files[path] = (st.st_size, st.st_mtime_ns)
    return files


def _git_ignored(paths: list[str], root: str = ROOT) -> set[str]:
    if not paths:
        return set()
    proc = subprocess.run(["git", "check-ignore", "--stdin"], input="\n".join(paths), cwd=root,
                          capture_output=True, text=True)
    return set(proc.stdout.splitlines()) if proc.returncode in (0, 1) else set()


def _outputs(paths: set[str], files: dict) -> list[str]:
    """``paths`` less source files and directories holding source files (somebody's new package)."""
    return sorted(p for p in paths if not p.endswith(_SOURCE_SUFFIXES) and not (
        p.endswith(os.sep) and any(f.startswith(p) and f.endswith(_SOURCE_SUFFIXES) for f in files)))


@pytest.fixture(scope="session", autouse=True)
def working_tree_untouched():
    """Fail the run if tests wrote into the checkout: tests write under ``tmp_path`` only.

    Compares the checkout's files before and after the session: a new or removed file
    or directory fails, and so does a changed file that git ignores (such as a rewritten
    ``out/`` of the README's first command, which may exist before the run). Source
    files (``.py``, ``.md``, ...: :data:`_SOURCE_SUFFIXES`) are left to ``git status``:
    people create and edit those while tests run.
    """
    before = working_tree_files()
    yield
    after = working_tree_files()
    created = _outputs(set(after) - set(before), after)
    removed = _outputs(set(before) - set(after), before)
    changed = sorted(_git_ignored([p for p in set(before) & set(after) if before[p] != after[p]]))
    problems = [f"{what}: {', '.join(paths[:20])}{' ...' if len(paths) > 20 else ''}"
                for what, paths in (("created", created), ("removed", removed), ("changed", changed)) if paths]
    assert not problems, ("tests wrote into the working tree " + ROOT + " (write under tmp_path instead); "
                          + "; ".join(problems))


@pytest.fixture(autouse=True)
def run_in_tmp_path(tmp_path, monkeypatch):
    """Run every test in its own ``tmp_path``: relative outputs and subprocesses stay out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def no_leaked_processes(request):
    """Fail a test that leaves JobManager/TaskManager/slot processes behind (and kill them)."""
    yield
    deadline = time.monotonic() + 10
    left = cluster_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = cluster_processes()
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"


@pytest.fixture(params=[1, 2], ids=["p1", "p2"])
def parallelism(request) -> int:
    """Run engine tests at parallelism 1 and 2."""
    return request.param


@pytest.fixture(params=["BATCH", "STREAMING"])
def mode(request) -> str:
    """Run engine tests in both runtime modes."""
    return request.param
