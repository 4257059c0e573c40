"""cluster.yaml: valid for the installed Ray autoscaler, and it installs what the README installs."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO_ROOT

CLUSTER_YAML = REPO_ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_validates_against_the_installed_autoscaler_schema(cluster):
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    validate_config(fillout_defaults(cluster))  # raises on any field the schema does not know


def test_head_runs_trials_and_gpu_workers_scale_from_zero(cluster):
    nodes = cluster["available_node_types"]
    head = nodes[cluster["head_node_type"]]
    assert head["resources"].get("trial_slot", 0) >= 1  # sweep.py pins trial functions to trial_slot
    assert "GPU" not in head["resources"]
    gpu_workers = [n for name, n in nodes.items() if name != cluster["head_node_type"]]
    assert gpu_workers and all(n["min_workers"] == 0 and n["resources"].get("GPU", 0) >= 1 for n in gpu_workers)


def test_setup_installs_the_readme_way_with_the_pinned_constraints(cluster):
    install = (REPO_ROOT / "install.sh").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    setup = " ; ".join(cluster["setup_commands"])
    readme_commands = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert "./install.sh" in setup and readme_commands.startswith("./install.sh")
    assert "-c constraints.txt" in install  # install.sh pins every package to constraints.txt
    for package in ("abcmidi", "abcm2ps"):
        assert package in setup
    # Every node runs the same Ray the project pins, from the project's .venv.
    starts = cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
    assert all("~/abcmusic/.venv/bin/ray" in c for c in starts if "ray start" in c or "ray stop" in c)
    assert cluster["file_mounts"] == {"~/abcmusic": "."}


def test_no_credentials_and_mlflow_only_on_the_heads_localhost(cluster):
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"(?i)(aws_secret_access_key|aws_access_key_id|AKIA[0-9A-Z]{16}|password)", text)
    server = next(c for c in cluster["head_start_ray_commands"] if "mlflow server --host" in c)
    assert "--host 127.0.0.1 " in server and "0.0.0.0" not in server
    assert not any("MLFLOW_TRACKING_URI" in c for c in cluster.get("worker_setup_commands", []))
    assert "--dashboard-host=0.0.0.0" not in text
    # The bucket is named in one place only.
    assert text.count("s3://") == 1
