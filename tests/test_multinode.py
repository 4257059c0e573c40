"""Integration tests: the real prepare.py and sweep.py on a simulated multi-node Ray cluster on this one machine.

`ray.cluster_utils.Cluster` starts a head node (1 CPU, the `trial_slot` resource that pins trial functions and
their Ray Train controllers to it, as cluster.yaml does, and the dashboard that serves Ray's state API) and two
worker nodes (1 CPU and one `fake_gpu` each, standing in for GPU nodes); each node is its own raylet and object
store. On the worker nodes `import mlflow` fails, as MLflow is unreachable from a real cluster's GPU nodes (the
tracking server listens on the head's localhost): trials must log through the driver's relay. The CLIs join it
with `--address`, as on a real cluster. A killed node's death is detected in ~3 s instead of
~15 s thanks to the fast health-check settings, which every process of the cluster and the CLIs inherit.
About 5 minutes and 5 GiB on this project's 2-core machine when it is otherwise idle, several times that when it
is busy: no wait here assumes a speed (see HANG_GUARD_S).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from abcmusic.models.registry import build_model
from abcmusic.tracking import model_registry
from conftest import REPO_ROOT, cli_env, run_cli, write_tiny_spec_with_compiled_gpt

pytestmark = pytest.mark.integration

# The GCS declares a node dead after `failure_threshold` failed health checks in a row, one every `period` once the
# previous one has ended. A killed node's checks fail at once (connection refused), so it is declared dead after
# ~3 s (Ray's default: 5 checks 3 s apart, ~15 s). A live node's check fails only when it gets no answer within
# `timeout`: at 1 s, a raylet starved of CPU (one core busy with another job) was declared dead while alive, which
# kills the node for good (the head's included: no more trial slots, no dashboard) and hung the tests that followed.
# A long timeout keeps a slow live node alive and costs nothing when a node dies.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "60000",
    "RAY_health_check_failure_threshold": "3",
}
# Every wait here ends as soon as what it waits for happens (a CLI exits, a checkpoint appears...); this bound only
# stops a test that would otherwise never end (a hang), and is far beyond what any of them takes on a busy machine.
HANG_GUARD_S = 3600
TINY_TRIALS = {"gpt-g1-lr0.003-s0", "gpt-g2-lr0.003-s0", "lstm-l1-lr0.003-s0"}
TOKENS_PER_STEP = 8 * 64  # tiny.yaml: batch 8 x context 64
DRIVER_KILL_TOKENS = 1_000_000
FAILOVER_TOKENS = 1_500_000  # the 1-layer GPT g1 trains at ~200k tokens/s here: ~8 s, its first checkpoint half way


@dataclass
class SimulatedCluster:
    cluster: object  # ray.cluster_utils.Cluster
    head_id: str
    workers: dict  # node id -> ray._private.node.Node (live worker nodes)
    dashboard: str
    no_mlflow: Path  # a folder whose `mlflow` package fails to import, first on the worker nodes' PYTHONPATH

    @property
    def address(self) -> str:
        return self.cluster.address

    def add_node(self, **node_args):
        """Add a node and wait until the GCS lists it (Cluster.add_node alone gives it 30 s: not on a busy machine)."""
        node = self.cluster.add_node(wait=False, **node_args)
        self.cluster.wait_for_nodes(timeout=HANG_GUARD_S)
        return node

    def add_worker(self) -> str:
        node = self.add_node(num_cpus=1, resources={"fake_gpu": 1}, env_vars={"PYTHONPATH": str(self.no_mlflow)})
        self.workers[node.node_id] = node
        return node.node_id

    def kill_worker(self, node_id: str) -> None:
        """Kill a worker node as a machine dies: every process on it at once, with no chance to clean up.

        `Cluster.remove_node` kills the node's raylet, object store and agents, but the worker processes the raylet
        started outlive it for a moment (a Train worker logged one more progress line): freeze them first, so that
        nothing of that node runs after this moment, then kill them."""
        node = self.workers.pop(node_id)
        raylet = node.all_processes["raylet"][0].process.pid
        pids = descendants(raylet)
        for pid in pids:
            signal_quietly(pid, signal.SIGSTOP)
        self.cluster.remove_node(node, allow_graceful=False)
        for pid in pids:
            signal_quietly(pid, signal.SIGKILL)
        deadline = time.monotonic() + HANG_GUARD_S
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in pids)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sim_cluster(tiny_project):
    """Head + 2 worker nodes, shared by the module's tests, shut down at the end whatever happens.

    It depends on tiny_project so that the local `prepare.py` (no --address) runs before the cluster exists: a
    `ray.init()` without an address joins the cluster recorded under RAY_TMPDIR, if there is one."""
    ray_tmp = tempfile.mkdtemp(prefix="rmn", dir="/tmp")  # short: socket paths must stay under ~107 characters
    home = tiny_project / ".home"
    home.mkdir(exist_ok=True)
    cluster = None
    with pytest.MonkeyPatch.context() as env:
        # The cluster's processes and the CLIs (cli_env copies os.environ) all see these.
        for name, value in {**FAST_HEALTH_CHECKS, "RAY_TMPDIR": ray_tmp, "HOME": str(home),
                            # ray start enables token auth when ~/.ray/auth_token exists while ray.init(address=...)
                            # does not: say it explicitly for every process
                            "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}.items():
            env.setenv(name, value)
        env.delenv("RAY_ADDRESS", raising=False)
        import ray
        from ray.cluster_utils import Cluster

        try:
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "resources": {"trial_slot": 4}, "include_dashboard": True,
                "dashboard_host": "127.0.0.1", "dashboard_port": free_port(), "wait": False})
            cluster.wait_for_nodes(timeout=HANG_GUARD_S)
            no_mlflow = Path(ray_tmp) / "no-mlflow"
            (no_mlflow / "mlflow").mkdir(parents=True)
            (no_mlflow / "mlflow" / "__init__.py").write_text(
                'raise ImportError("MLflow is not reachable from a worker node")\n')
            simulated = SimulatedCluster(cluster, cluster.head_node.node_id, {}, f"http://{cluster.webui_url}",
                                         no_mlflow)
            for _ in range(2):
                simulated.add_worker()
            assert not ray.is_initialized()  # the test process itself never joins: only the CLIs do
            yield simulated
        finally:
            if ray.is_initialized():
                ray.shutdown()
            if cluster is not None:
                for node in list(cluster.worker_nodes):
                    cluster.remove_node(node, allow_graceful=False)
                cluster.shutdown()  # the head; also forgets the cluster address recorded under RAY_TMPDIR
                cluster.global_state.disconnect()
            shutil.rmtree(ray_tmp, ignore_errors=True)


def mlflow_client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def trial_runs(workdir: Path, sweep: str) -> dict:
    client = mlflow_client(workdir)
    experiment = client.get_experiment_by_name(sweep)
    if experiment is None:
        return {}
    return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("abcmusic.kind") == "trial"}


def run_nodes(run) -> list[str]:
    tag = run.data.tags.get("abcmusic.nodes", "")
    return tag.split(",") if tag else []


def assert_model_loads(client, run, target: Path) -> None:
    uri = client.tracking_uri
    model_dir = model_registry.run_models(uri, [run.info.experiment_id])[run.info.run_id].download(uri, str(target))
    config = json.loads((model_dir / "config.json").read_text())
    model = build_model(config["arch"], config["model"])
    model.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))


def test_prepare_on_the_cluster_spreads_over_nodes_and_gives_the_local_dataset(sim_cluster, tiny_project):
    result = run_cli("prepare.py", "--demo-tunes", "60", "--out", "data/demo-cluster", "--spread-over-nodes",
                     "--address",
                     sim_cluster.address, cwd=tiny_project, timeout=HANG_GUARD_S)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert "on 3 CPUs" in result.stdout  # it saw the whole cluster: 1 CPU per node
    local, clustered = tiny_project / "data" / "demo", tiny_project / "data" / "demo-cluster"

    for split in ("train", "val", "test"):
        a, b = pq.read_table(local / split), pq.read_table(clustered / split)
        assert a.num_rows > 0 or split != "train"
        assert a.column("source_path").to_pylist() == b.column("source_path").to_pylist(), split
        assert a.column("content_hash").to_pylist() == b.column("content_hash").to_pylist(), split
        assert a.equals(b), split  # abc text and token ids too, row for row
    manifest_a = json.loads((local / "manifest.json").read_text())
    manifest_b = json.loads((clustered / "manifest.json").read_text())
    for manifest in (manifest_a, manifest_b):
        manifest.pop("created_at"), manifest.pop("seconds")
    assert manifest_a == manifest_b  # counts per reason and rule, splits, vocabulary size, fingerprint, versions
    assert (local / "vocab.json").read_text() == (clustered / "vocab.json").read_text()
    assert (local / "rejected.jsonl").read_text() == (clustered / "rejected.jsonl").read_text()

    # Where the conversion tasks ran, from Ray's state API (task events kept by the head's GCS).
    from ray.util.state import list_tasks

    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        tasks = [t for t in list_tasks(address=sim_cluster.dashboard, filters=[("state", "=", "FINISHED")],
                                       limit=10_000, raise_on_missing_output=False, timeout=HANG_GUARD_S)
                 if "convert_chunk" in t.name]
        nodes = {t.node_id for t in tasks}
        if (len(nodes) >= 2 and nodes & set(sim_cluster.workers)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert tasks, "no conversion task in Ray's task events"
    assert nodes <= {sim_cluster.head_id, *sim_cluster.workers}
    assert len(nodes) >= 2 and nodes & set(sim_cluster.workers), (
        f"conversion tasks ran on {len(nodes)} node(s): {sorted(nodes)}")


def test_prepare_on_the_cluster_converts_on_its_own_node_unless_told_to_spread(sim_cluster, tiny_project):
    """Without --spread-over-nodes the tasks stay on the driver's node: they read MIDI files and write Parquet
    parts by path, which on a real cluster only that node can reach unless the storage is shared."""
    from ray.util.state import list_tasks

    def conversion_tasks() -> dict[str, str]:
        return {t.task_id: t.node_id for t in list_tasks(address=sim_cluster.dashboard, limit=10_000,
                                                          raise_on_missing_output=False, timeout=HANG_GUARD_S)
                if "convert_chunk" in t.name}

    before = conversion_tasks()
    result = run_cli("prepare.py", "--demo-tunes", "60", "--out", "data/demo-pinned", "--force", "--address",
                     sim_cluster.address, cwd=tiny_project, timeout=HANG_GUARD_S)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert "on 1 CPUs" in result.stdout  # the head's CPU only
    deadline = time.monotonic() + HANG_GUARD_S
    while not (new := {k: v for k, v in conversion_tasks().items() if k not in before}) and time.monotonic() < deadline:
        time.sleep(1)
    assert new and set(new.values()) == {sim_cluster.head_id}
    for split in ("train", "val", "test"):
        assert pq.read_table(tiny_project / "data" / "demo-pinned" / split).equals(
            pq.read_table(tiny_project / "data" / "demo" / split))


def storage_checks(workdir: Path, bucket: Path, sweep: str, trials: set[str]) -> None:
    """Checkpoints and Tune state in --storage, nothing in the project's results/ray or Ray's ~/ray_results."""
    assert {p.parent.parent.name for p in bucket.glob(f"{sweep}-*/checkpoint_*/state.pt")} == {
        f"{sweep}-{t}" for t in trials}
    assert list((bucket / sweep).glob("experiment_state-*.json"))
    assert {p.name for p in (bucket / sweep).iterdir() if p.is_dir()} == trials  # Tune's trial results
    assert not list((workdir / "results" / "ray").glob(f"{sweep}*"))
    assert not list((workdir / ".home").glob(f"ray_results/**/{sweep}*"))
    assert not [p for p in workdir.rglob("checkpoint_*") if sweep in str(p)]


def test_a_sweep_places_trials_on_worker_nodes_by_their_resources(sim_cluster, tiny_project, tmp_path_factory):
    bucket = tmp_path_factory.mktemp("bucket")
    result = run_cli("sweep.py", "--experiment", "tiny", "--name", "mn-place", "--address", sim_cluster.address,
                     "--worker-resource", "fake_gpu=1", "--storage", bucket.as_uri(), cwd=tiny_project,
                     timeout=HANG_GUARD_S)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    runs = trial_runs(tiny_project, "mn-place")
    assert set(runs) == TINY_TRIALS
    client = mlflow_client(tiny_project)
    used = set()
    for name, run in runs.items():
        assert run.info.status == "FINISHED", name
        assert {"result/val_loss", "result/test_loss", "perf/mfu"} <= set(run.data.metrics), name
        assert run.data.metrics["progress/tokens_seen"] == 20000 // TOKENS_PER_STEP * TOKENS_PER_STEP
        nodes = run_nodes(run)
        # one node per trial (no failover), and it is a fake_gpu worker node: never the head, which has none
        assert len(nodes) == 1 and nodes[0] in sim_cluster.workers, (name, nodes, sim_cluster.head_id)
        used.add(nodes[0])
        assert_model_loads(client, run, tiny_project / "dl" / "mn-place" / name)
    assert len(used) == 2  # 3 trials, 2 nodes with one fake_gpu each: both served
    storage_checks(tiny_project, bucket, "mn-place", TINY_TRIALS)


def test_a_trial_that_compiles_on_a_node_without_its_compiler_fails_and_says_so(sim_cluster, tiny_project):
    """On a cluster the driver cannot know the workers' nodes: the trial checks its own before it compiles. A node
    whose $CXX names no compiler (the CPU's, as the trial trains on a CPU) fails the trial before its first step,
    and the sweep prints why, in one line per trial."""
    node = sim_cluster.add_node(num_cpus=1, resources={"no_cxx": 1},
                                env_vars={"PYTHONPATH": str(sim_cluster.no_mlflow), "CXX": "no-such-cxx"})
    try:
        spec = write_tiny_spec_with_compiled_gpt(tiny_project / "compiled.yaml")
        result = run_cli("sweep.py", "--experiment", str(spec), "--arch", "gpt", "--sizes", "g1", "--name",
                         "mn-compile", "--address", sim_cluster.address, "--worker-resource", "no_cxx=1",
                         cwd=tiny_project, timeout=HANG_GUARD_S)
    finally:
        sim_cluster.cluster.remove_node(node, allow_graceful=False)
    assert result.returncode == 1, (result.stdout[-3000:], result.stderr[-3000:])
    assert ("gpt-g1-lr0.003-s0 failed: CompilerMissing: compile: true needs a C++ compiler for Inductor's CPU "
            "kernels ($CXX=no-such-cxx is not found) on ") in result.stdout, result.stdout[-3000:]
    assert "sweep.py: 1 trial(s) failed" in result.stderr, result.stderr[-3000:]
    run = trial_runs(tiny_project, "mn-compile")["gpt-g1-lr0.003-s0"]
    assert "progress/tokens_seen" not in run.data.metrics  # it failed before its first step


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or being rewritten
        return None


def test_a_killed_worker_node_fails_over_and_training_resumes_from_its_checkpoint(
        sim_cluster, tiny_project, tmp_path_factory):
    bucket = tmp_path_factory.mktemp("bucket")
    sweep, trial = "mn-fail", "gpt-g1-lr0.003-s0"
    log_path = tiny_project / f"{sweep}.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "sweep.py"), "--experiment", "tiny", "--arch", "gpt", "--sizes", "g1",
             "--tokens", str(FAILOVER_TOKENS), "--name", sweep, "--address", sim_cluster.address,
             "--worker-resource", "fake_gpu=1", "--storage", bucket.as_uri()],
            cwd=tiny_project, env=cli_env(tiny_project / ".home"), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        # Wait until the trial trains on a worker node (its MLflow run names it) and Ray Train has committed a
        # checkpoint (its checkpoint manager's snapshot in the storage names one): then kill that node.
        snapshot_path = bucket / f"{sweep}-{trial}" / "checkpoint_manager_snapshot.json"
        deadline = time.monotonic() + HANG_GUARD_S
        victim = checkpoint = None
        while time.monotonic() < deadline and driver.poll() is None:
            snapshot = read_json(snapshot_path)
            if snapshot and snapshot.get("latest_checkpoint_result"):
                checkpoint = snapshot["latest_checkpoint_result"]["metrics"]["tokens_seen"]
                nodes = run_nodes(trial_runs(tiny_project, sweep)[trial])
                assert len(nodes) == 1, nodes
                victim = nodes[0]
                break
            time.sleep(0.1)
        assert victim is not None, f"no checkpoint before the deadline:\n{log_path.read_text()[-3000:]}"
        assert checkpoint < FAILOVER_TOKENS // TOKENS_PER_STEP * TOKENS_PER_STEP, "the trial ended before the kill"
        assert victim in sim_cluster.workers, (victim, sim_cluster.head_id)
        killed_at = time.time()
        sim_cluster.kill_worker(victim)
        dead_at = time.time()  # every process of the node is gone: whatever is logged later comes from elsewhere
        moved_at = None  # when the trial's rank 0 started on another node (and tagged its run)
        deadline = time.monotonic() + HANG_GUARD_S
        while driver.poll() is None and time.monotonic() < deadline:
            if moved_at is None and len(run_nodes(trial_runs(tiny_project, sweep)[trial])) > 1:
                moved_at = time.time()
            time.sleep(0.2)
        assert driver.poll() == 0, log_path.read_text()[-5000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()

    run = trial_runs(tiny_project, sweep)[trial]
    client = mlflow_client(tiny_project)
    assert run.info.status == "FINISHED"
    budget = FAILOVER_TOKENS // TOKENS_PER_STEP * TOKENS_PER_STEP
    assert run.data.metrics["progress/tokens_seen"] == budget
    assert {"result/val_loss", "result/test_loss", "perf/mfu"} <= set(run.data.metrics)
    assert_model_loads(client, run, tiny_project / "dl" / sweep)
    nodes = run_nodes(run)
    assert len(nodes) == 2 and nodes[0] == victim and nodes[1] != victim, nodes
    assert nodes[1] in sim_cluster.workers  # the surviving fake_gpu node, not the head

    history = client.get_metric_history(run.info.run_id, "progress/tokens_seen")
    tokens = [m.value for m in sorted(history, key=lambda m: m.step)]
    # Logged before the kill, and every point exactly once although the second attempt replayed the steps after
    # its checkpoint; in step order the counts only grow.
    assert min(m.value for m in history if m.timestamp <= dead_at * 1000) < checkpoint
    assert len(tokens) == len(set(tokens)) and tokens == sorted(tokens) and tokens[-1] == budget
    # The second attempt started from the committed checkpoint seen before the kill (or a later one), not from
    # zero, and said so.
    resumed = client.get_metric_history(run.info.run_id, "progress/resumed_at_tokens")
    assert len(resumed) == 1 and checkpoint <= resumed[0].value < budget, ([m.value for m in resumed], checkpoint)
    after = [m for m in history if m.timestamp > dead_at * 1000 and m.value > resumed[0].value]
    assert after, "nothing logged after the resume"
    final_history = client.get_metric_history(run.info.run_id, "result/val_loss")
    assert len(final_history) == 1  # the trial finished once
    storage_checks(tiny_project, bucket, sweep, {trial})
    print(f"failover: node killed in {dead_at - killed_at:.1f} s; the trial's worker started on another node "
          f"{(moved_at or float('nan')) - killed_at:.1f} s after the kill; first progress logged "
          f"{after[0].timestamp / 1000 - killed_at:.1f} s after (at {after[0].value:,.0f} tokens; checkpoint "
          f"{checkpoint:,})")
    sim_cluster.add_worker()  # a replacement node, as an autoscaler would start: the cluster has 2 workers again


def test_a_killed_sweep_driver_resumes_on_the_cluster_without_rerunning_or_duplicating(
        sim_cluster, tiny_project, tmp_path_factory):
    """SIGKILL the sweep driver (a client of the cluster, like a job on the head) once a trial has finished: Ray
    ends its trials on the worker nodes with it; `--resume` on the cluster finishes the rest from the storage."""
    bucket = tmp_path_factory.mktemp("bucket")
    sweep = "mn-driver"
    # Long enough that the last trial still trains when Tune's saved state (written every ~10 s) first records a
    # finished one: at tiny.yaml's 20k tokens all three had finished by then.
    arguments = ["--experiment", "tiny", "--tokens", str(DRIVER_KILL_TOKENS), "--address", sim_cluster.address,
                 "--worker-resource", "fake_gpu=1", "--storage", bucket.as_uri()]
    log_path = tiny_project / f"{sweep}.log"
    with open(log_path, "w") as log:
        driver = subprocess.Popen([sys.executable, str(REPO_ROOT / "sweep.py"), "--name", sweep, *arguments],
                                  cwd=tiny_project, env=cli_env(tiny_project / ".home"), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline and driver.poll() is None and not any(
                '\\"status\\": \\"TERMINATED\\"' in p.read_text(errors="replace")
                for p in (bucket / sweep).glob("experiment_state-*.json")):
            time.sleep(0.2)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, log_path.read_text()[-3000:]
    client = mlflow_client(tiny_project)
    finished_before = {name: run.info.run_id for name, run in trial_runs(tiny_project, sweep).items()
                       if run.info.status == "FINISHED"}
    assert finished_before and len(finished_before) < len(TINY_TRIALS), finished_before

    resumed = run_cli("sweep.py", "--resume", sweep, *arguments, cwd=tiny_project, timeout=HANG_GUARD_S)
    assert resumed.returncode == 0, (resumed.stdout[-3000:], resumed.stderr[-3000:])
    runs = trial_runs(tiny_project, sweep)
    assert set(runs) == TINY_TRIALS  # one run per trial: none created twice
    for name, run in runs.items():
        assert run.info.status == "FINISHED", name
        assert run.data.metrics["progress/tokens_seen"] == DRIVER_KILL_TOKENS // TOKENS_PER_STEP * TOKENS_PER_STEP, name
        assert len(client.get_metric_history(run.info.run_id, "result/val_loss")) == 1, f"{name} finished twice"
        for key in ("progress/tokens_seen", "loss/train", "loss/val"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps and len(steps) == len(set(steps)), (name, key, steps)  # nothing logged twice
        assert all(node in sim_cluster.workers for node in run_nodes(run)), name
        assert_model_loads(client, run, tiny_project / "dl" / sweep / name)
    for name, run_id in finished_before.items():
        assert runs[name].info.run_id == run_id
    storage_checks(tiny_project, bucket, sweep, TINY_TRIALS)


def test_prepare_from_a_midi_uri_converts_on_every_node_and_gives_the_local_dataset(sim_cluster, tiny_project):
    """--midi-dir as a URI (file:// standing in for a bucket every node reads): no --spread-over-nodes needed, the
    tasks run on all nodes and return their parts to the driver, and the dataset is the one built from the path."""
    from ray.util.state import list_tasks

    def conversion_tasks() -> list:
        return [t for t in list_tasks(address=sim_cluster.dashboard, limit=10_000,
                                      filters=[("state", "=", "FINISHED")], raise_on_missing_output=False,
                                      timeout=HANG_GUARD_S)
                if "convert_chunk" in t.name]

    earlier_jobs = {t.job_id for t in conversion_tasks()}  # of the earlier prepare runs (each CLI run is one job)
    midi_uri = (tiny_project / "data" / "demo-midi-60").as_uri()
    result = run_cli("prepare.py", "--midi-dir", midi_uri, "--out", "data/demo-from-uri", "--address",
                     sim_cluster.address, cwd=tiny_project, timeout=HANG_GUARD_S)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert "on 3 CPUs" in result.stdout  # the whole cluster's CPUs
    local, from_uri = tiny_project / "data" / "demo", tiny_project / "data" / "demo-from-uri"
    for split in ("train", "val", "test"):
        assert pq.read_table(local / split).equals(pq.read_table(from_uri / split)), split
    manifest_a = json.loads((local / "manifest.json").read_text())
    manifest_b = json.loads((from_uri / "manifest.json").read_text())
    assert manifest_b["midi_dir"] == midi_uri
    for manifest in (manifest_a, manifest_b):
        manifest.pop("created_at"), manifest.pop("seconds"), manifest.pop("midi_dir")
    assert manifest_a == manifest_b  # fingerprint included
    assert (local / "vocab.json").read_text() == (from_uri / "vocab.json").read_text()

    deadline = time.monotonic() + HANG_GUARD_S
    while True:  # task events reach the head's GCS a moment after the tasks end
        nodes = {t.node_id for t in conversion_tasks() if t.job_id not in earlier_jobs}
        if (len(nodes) >= 2 and nodes & set(sim_cluster.workers)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert nodes <= {sim_cluster.head_id, *sim_cluster.workers}
    assert len(nodes) >= 2 and nodes & set(sim_cluster.workers), (
        f"conversion tasks ran on {len(nodes)} node(s): {sorted(nodes)}")
