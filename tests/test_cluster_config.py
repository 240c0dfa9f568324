"""cluster.yaml passes Ray's own schema and config preparation, offline."""
import copy
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_schema_validates(config):
    jsonschema = pytest.importorskip("jsonschema")
    ray_autoscaler = pytest.importorskip("ray.autoscaler")
    schema = json.loads((Path(ray_autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_ray_prepare_and_validate(config):
    pytest.importorskip("ray.autoscaler")
    from deployments.ray_private import prepare_and_validate_cluster

    prepared = prepare_and_validate_cluster(copy.deepcopy(config))
    types = prepared["available_node_types"]
    assert types["gpu_worker"]["resources"]["GPU"] == 1 and "GPU" not in types["cpu_worker"]["resources"]
    assert types["gpu_worker"]["max_workers"] >= 1 and prepared["head_node_type"] == "head"
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError, match="head_node_type. must be one of .available_node_types"):
        prepare_and_validate_cluster(broken)


def test_every_key_is_commented():
    lines = (ROOT / "cluster.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-")) and ":" in line:
            assert lines[i - 1].startswith("#"), f"top-level key without a comment: {line}"


def test_dashboard_is_not_exposed(config):
    assert all("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"] if "--head" in c)


def test_ray_token_auth_is_on_for_every_node(config):
    """`ray start` in Ray 2.60 enables token auth only if a token file already exists (only a local
    ray.init() enables it by default), so the cluster sets it explicitly and ships the token."""
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts if "ray start" in c)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_every_node_serves_from_the_home_the_model_was_built_in(config):
    """setup built the model in ~/.ecrec while Ray workers looked in ~/.cache/ecrec (the default)."""
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("ECREC_HOME=$HOME/.ecrec" in c for c in starts if "ray start" in c)
    assert any("ECREC_HOME=$HOME/.ecrec ecrec prepare" in c for c in config["setup_commands"])


def test_redis_for_profiles_is_durable_and_not_on_rays_port(config):
    [cmd] = [c for c in config["head_start_ray_commands"] if c.startswith("mkdir -p ~/ecrec-redis")]
    assert "--port 6390" in cmd and "--appendonly yes" in cmd and "--appendfsync always" in cmd
    assert "--requirepass" in cmd and "ecrec_redis_password" in cmd  # the secret from a mounted file
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("ECREC_REDIS_PASSWORD=" in c for c in starts if "ray start" in c)
