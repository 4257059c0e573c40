"""Benchmark: the demo sweep on one node against the same sweep on three simulated Ray nodes on this machine.

Runs the real `sweep.py --experiment demo --data DATA --tokens TOKENS` as a user would (a subprocess in a scratch
project folder, its own MLflow store), in turn:

1. one node: sweep.py without --address, so it starts a local Ray itself (`trial_slot` = CPUs / CPUs per trial,
   and every CPU of the machine);
2. three simulated nodes: a `ray.cluster_utils.Cluster` on this machine, each node its own raylet, agents and object
   store: a head with the same number of `trial_slot`s and 0 CPUs (it runs the trial functions and Ray Train
   controllers, which reserve no CPU, as on one node) and two worker nodes with 1 CPU each for the Train workers;
   sweep.py joins it with --address;
3. the same in a fresh cluster with Ray Train's preemption watcher off (RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0):
   sweep.py turns it off on a local Ray but keeps it on a joined cluster, where spot nodes can be reclaimed, and it
   costs one more actor process per trial; this run tells that cost from the cost of the extra nodes
   (--skip-no-watcher leaves it out).

Every configuration offers the Train workers the same 2 CPUs of the same 2 cores and runs two trials at a time, so
three simulated nodes cannot be faster than one: the ideal ratio is 1.0, and what the ratio measures is the cost of
the multi-node machinery. A head with 1 CPU would offer Train 3 CPUs on 2 cores and let Train workers land on the
node that cluster.yaml keeps for drivers: not a fair comparison. (A 0-CPU head lets its raylet start worker
processes one at a time, `maximum_startup_concurrency` = max(1, CPUs); a side run with a 2-CPU head whose Train
workers were kept off it by a custom resource measured the same wall time, see BENCHMARKS.md.)

    .venv/bin/python benchmarks/cluster_bench.py [--data /tmp/mm_demo/demo] [--tokens 500000] [--demo-tunes 2000]

Without --data it builds a small demo dataset first (`prepare.py --demo-tunes N` in a scratch project). About 10
minutes on this project's 2-core machine at the default 500,000 tokens per trial. Every Ray it starts is shut down
and the scratch folder removed at the end, also on errors and Ctrl-C (--keep keeps the folder: logs, MLflow stores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from abcmusic import testing
from abcmusic.tracking.metric_names import read_metric
from process_memory import PeakMemory, process_tree  # beside this file

SWEEP_NAME = "bench"
CPUS_PER_TRIAL = 1  # demo.yaml: one worker x one CPU per trial


@dataclass
class Measured:
    label: str
    command_seconds: float
    trials_seconds: float
    finished: int
    expected: int
    nodes: int
    train_seconds: float
    setup_seconds: float
    peak_pss_mib: float
    slots: int

    @property
    def share(self) -> float:
        return self.train_seconds / (self.trials_seconds * self.slots)


# --- processes: what this benchmark started, and their memory ---------------------------------------------------


def descendants(pid: int) -> list[int]:
    return process_tree(pid)[1:]


def mentions(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_leftovers(scratch: Path) -> int:
    """Kill, by pid, whatever this benchmark started that is still alive: its descendants and any process whose
    command line names the scratch folder (Ray's processes name their session folder under RAY_TMPDIR there)."""
    me = os.getpid()
    pids = {p for p in descendants(me)} | {int(p.name) for p in Path("/proc").glob("[0-9]*")
                                            if int(p.name) != me and mentions(int(p.name), str(scratch))}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.1)
    return len(pids)


# --- running the CLIs -----------------------------------------------------------------------------------------------


def cli_env(home: Path, ray_tmp: Path) -> dict[str, str]:
    """The tests' environment for a script (private HOME, no telemetry, no RAY_ADDRESS), with Ray's files under
    `ray_tmp`."""
    return testing.cli_env(home) | {
        "RAY_TMPDIR": str(ray_tmp),  # a ray.init() without an address would join a cluster recorded there
        "RAY_AUTH_MODE": "disabled",  # ray start and ray.init(address=...) must agree on token auth
    }


def run_cli(script: str, args: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Run prepare.py or sweep.py to the end in its own session; its wall seconds. A failure stops the benchmark."""
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(testing.script_command(script, *args), cwd=cwd, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    seconds = time.perf_counter() - started
    if returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{script} {' '.join(args)} failed with exit status {returncode} (log above)")
    return seconds


def measure(label: str, project: Path, command_seconds: float, peak: float, expected: int, slots: int) -> Measured:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(SWEEP_NAME)
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get("abcmusic.kind") == "trial" and r.info.status == "FINISHED"]
    nodes = {node for r in runs for node in r.data.tags.get("abcmusic.nodes", "").split(",") if node}
    return Measured(
        label, command_seconds,
        (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000,
        len(runs), expected, len(nodes), sum(read_metric(r.data.metrics, "train_seconds") for r in runs),
        statistics.fmean(read_metric(r.data.metrics, "setup_seconds") for r in runs), peak, slots)


def one_node(scratch: Path, data: Path, tokens: int, expected: int, slots: int) -> Measured:
    project = scratch / "one"
    env = cli_env(scratch / "home", scratch / "r1")
    with PeakMemory(interval_s=2.0, include_self=False) as memory:
        seconds = run_cli("sweep.py", ["--experiment", "demo", "--data", str(data), "--tokens", str(tokens),
                                       "--name", SWEEP_NAME], project, env, scratch / "one.log")
    return measure(f"one node: local Ray, {os.cpu_count()} CPUs", project, seconds, memory.peak_pss / 2**20,
                   expected, slots)


def three_nodes(scratch: Path, data: Path, tokens: int, expected: int, slots: int,
                watcher: bool = True) -> tuple[Measured, float]:
    """The same sweep joined to a simulated head (0 CPUs, the trial slots) + 2 worker nodes (1 CPU each), in a fresh
    cluster. watcher=False turns off Ray Train's preemption watcher, which sweep.py leaves on when it joins a
    cluster (on a local Ray it turns it off): one more actor process per trial, useful on spot nodes only."""
    tag = "three" if watcher else "three-nowatch"
    project = scratch / tag
    env = cli_env(scratch / "home", scratch / f"r{tag}")
    if not watcher:
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"  # for the cluster's processes and sweep.py's trials
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the cluster's processes inherit this process's environment
    cluster = None
    try:
        import ray
        from ray.cluster_utils import Cluster

        started = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "resources": {"trial_slot": slots}, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=CPUS_PER_TRIAL)
        cluster.wait_for_nodes()
        cluster_start = time.perf_counter() - started
        assert not ray.is_initialized()  # only sweep.py joins the cluster
        with PeakMemory(interval_s=2.0, include_self=False) as memory:
            seconds = run_cli("sweep.py", ["--experiment", "demo", "--data", str(data), "--tokens", str(tokens),
                                           "--name", SWEEP_NAME, "--address", cluster.address],
                              project, env, scratch / f"{tag}.log")
        label = f"three nodes: head 0 CPU + 2 x {CPUS_PER_TRIAL} CPU" + ("" if watcher else ", no watcher")
        return measure(label, project, seconds, memory.peak_pss / 2**20, expected, slots), cluster_start
    finally:
        if cluster is not None:
            for node in list(cluster.worker_nodes):
                cluster.remove_node(node, allow_graceful=False)
            cluster.shutdown()
            cluster.global_state.disconnect()
        os.environ.clear()
        os.environ.update(saved)


def expected_trials() -> int:
    from abcmusic.sweep.spec import build_grid, load_spec

    return len(build_grid(load_spec("demo")))


def report(rows: list[Measured], cluster_starts: list[float], data: Path, tokens: int) -> None:
    one = rows[0]
    cores = os.cpu_count()
    print(f"demo sweep (experiments/demo.yaml), {one.expected} trials of {tokens:,} tokens on {data}; "
          f"{one.slots} trials at a time, 1 Train worker x {CPUS_PER_TRIAL} CPU each")
    print(f"this machine: {cores} cores. Every configuration gives the Train workers the same {one.slots} CPUs of the "
          f"same {cores} cores, so three simulated nodes cannot be faster than one:")
    print("the ideal ratio is 1.00; above it is the cost of the multi-node machinery (more raylets and agents on the "
          "same cores, cross-node scheduling, and Ray Train's preemption watcher, which sweep.py keeps on when it "
          "joins a cluster: the last row turns it off)")
    print(f"simulated cluster start-up: {', '.join(f'{s:.1f} s' for s in cluster_starts)} (in no time below: a "
          f"user's cluster is already up)")
    print(f"{'configuration':<48} {'command s':>9} {'ratio':>5} {'trials s':>8} {'ratio':>5} {'trials':>6} "
          f"{'nodes':>5} {'train s':>7} {'setup s':>7} {'training':>8} {'peak MiB':>8}")
    for m in rows:
        print(f"{m.label:<48} {m.command_seconds:>9.1f} {m.command_seconds / one.command_seconds:>5.2f} "
              f"{m.trials_seconds:>8.1f} {m.trials_seconds / one.trials_seconds:>5.2f} "
              f"{f'{m.finished}/{m.expected}':>6} {m.nodes:>5} {m.train_seconds:>7.1f} {m.setup_seconds:>7.1f} "
              f"{m.share:>8.1%} {m.peak_pss_mib:>8,.0f}")
    print("command s: the whole sweep.py command (Ray start or join, trials, fit); trials s: first trial start to "
          "last trial end (MLflow); ratio: against one node (ideal 1.00); nodes: Ray nodes the trials trained on; "
          "train s: training time summed over trials; setup s: mean trial start to first step; training: train s / "
          "(trials s x slots); peak MiB: peak PSS of every process started for the run, sampled every 2 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a prepared demo dataset (default: build one with --demo-tunes)")
    parser.add_argument("--demo-tunes", type=int, default=2000, help="tunes of the dataset built when no --data "
                                                                     "is given (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=500_000, help="token budget per trial (default: %(default)s; "
                                                                    "demo.yaml has 1,500,000)")
    parser.add_argument("--skip-no-watcher", action="store_true", help="leave out the third run (three nodes with "
                                                                          "Ray Train's preemption watcher off)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, MLflow stores)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below on kill too

    # Short: Ray's socket paths under RAY_TMPDIR must stay under ~107 characters.
    scratch = Path(tempfile.mkdtemp(prefix="clb", dir="/tmp"))
    (scratch / "home").mkdir()
    try:
        if args.data is None:
            prepare_project = scratch / "prepare"
            seconds = run_cli("prepare.py", ["--demo-tunes", str(args.demo_tunes)], prepare_project,
                              cli_env(scratch / "home", scratch / "r0"), scratch / "prepare.log")
            data = prepare_project / "data" / "demo"
            print(f"prepared a demo dataset of {args.demo_tunes} tunes in {seconds:.1f} s")
        else:
            data = args.data.resolve()
            if not (data / "manifest.json").is_file():
                raise SystemExit(f"{data}: no prepared dataset there (no manifest.json)")
        expected = expected_trials()
        slots = max(1, (os.cpu_count() or 1) // CPUS_PER_TRIAL)  # what sweep.py gives a local Ray
        one = one_node(scratch, data, args.tokens, expected, slots)
        three, start = three_nodes(scratch, data, args.tokens, expected, slots)
        rows, starts = [one, three], [start]
        if not args.skip_no_watcher:
            no_watcher, start = three_nodes(scratch, data, args.tokens, expected, slots, watcher=False)
            rows.append(no_watcher)
            starts.append(start)
        report(rows, starts, data, args.tokens)
    finally:
        killed = kill_leftovers(scratch)
        if killed:
            print(f"clean-up: {killed} leftover process(es) killed", file=sys.stderr)
        if args.keep:
            print(f"scratch folder kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
