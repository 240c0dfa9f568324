"""The Serve config file's args are valid AppArgs, and the builder accepts key=value strings."""
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_serve_config_args_validate():
    pytest.importorskip("ray.serve")
    from deployments.config import AppArgs

    cfg = yaml.safe_load((ROOT / "deployments" / "serve_config.yaml").read_text())
    assert cfg["http_options"]["host"] == "127.0.0.1"
    app = cfg["applications"][0]
    assert app["import_path"] == "deployments.app:build_app"
    args = AppArgs.model_validate(app["args"])
    # the shipped config deploys over what `make serve` wrote: the same shard count (else LayoutMismatch)
    assert args.num_shards == AppArgs().num_shards == 2 and args.encoder_max_replicas == 4
    # and over the same index artifact and content folders (the config names the demo files relatively)
    assert args.resolved_index_dir() == AppArgs().resolved_index_dir()
    assert args.resolved_content_dir() == AppArgs().resolved_content_dir()
    # `serve run deployments.app:build_app num_shards=8` passes strings
    assert AppArgs.model_validate({"num_shards": "8", "explore_share": "0"}).num_shards == 8
    with pytest.raises(ValueError, match="num_shards"):
        AppArgs.model_validate({"num_shards": "0"})
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        AppArgs.model_validate({"sqlite_synchronous": "OFF"})


def test_the_config_builder_is_what_serve_deploy_can_call():
    """``serve deploy`` calls the import_path with exactly one argument, the config's args; a second
    parameter (even with a default) makes Serve refuse the app ("Application builder functions
    should take exactly one parameter"): the operator's path broke that way once."""
    import inspect

    pytest.importorskip("ray.serve")
    from deployments.app import build_app

    assert list(inspect.signature(build_app).parameters) == ["args"]


def test_the_encoder_runtime_env_adds_to_the_apps(monkeypatch):
    """A deployment that names a runtime_env gets nothing of the app's from Serve: the CPU replica's
    OMP_WAIT_POLICY is added to the app's runtime_env, and a GPU replica names none."""
    from deployments.app import _encoder_runtime_env

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert _encoder_runtime_env(on_cpu=False) == {}
    assert _encoder_runtime_env(on_cpu=True) == {"runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}}


def test_node_cpus_is_rays_count_of_this_node_else_this_processs_cores(monkeypatch):
    """Both answers of ``_node_cpus`` on their own: whether some other test module left a Ray
    running in this process (the integration graph's ``num_cpus=2``) must not decide which one
    this test sees, so Ray's side is played here with known numbers."""
    import os
    from types import SimpleNamespace

    import ray

    from deployments.app import _node_cpus

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    assert _node_cpus() == len(os.sched_getaffinity(0))  # without Ray: this process's cores
    # with Ray: the CPU count Ray gives the node this process runs on (not another node's, not the
    # machine's cores: a cgroup quota or --num-cpus is what Ray reports)
    nodes = [{"NodeID": "head", "Resources": {"CPU": 64.0}}, {"NodeID": "here", "Resources": {"CPU": 3.0}}]
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "here"))
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    assert _node_cpus() == 3
    nodes[1]["Resources"] = {"memory": 1e9}  # a node with no CPU resource: this process's cores
    assert _node_cpus() == len(os.sched_getaffinity(0))


def test_encoder_batch_sizes_follow_the_device():
    """Unset, the Encoder batches 16 texts (32 rows a forward pass) on CPU and 64 (256 rows) on a
    GPU, where CUDA graphs make big batches pay; a null in the serve config's user_config keeps
    that default (it was ``int(None)`` before)."""
    pytest.importorskip("ray.serve")
    from deployments.config import AppArgs
    from deployments.encoder import Encoder
    from ecrec.text.encoder import batch_sizes

    cpu = Encoder.func_or_class(AppArgs())
    cpu.reconfigure({"max_batch_size": None})
    assert (cpu.max_batch_size, cpu.encoder.config.batch_size) == (16, 32)
    cpu.reconfigure({"max_batch_size": 5})
    assert cpu.max_batch_size == 5
    import torch

    # asked for a GPU: sized for the device it gets (here, without CUDA, the CPU's batches)
    asked = Encoder.func_or_class(AppArgs(encoder_num_gpus=1))
    asked.reconfigure({})
    want = batch_sizes(torch.cuda.is_available())
    assert (asked.max_batch_size, asked.encoder.config.batch_size) == want
    assert asked.encoder.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert batch_sizes(True) == (64, 256)
    told = Encoder.func_or_class(AppArgs(max_batch_size=7, encoder_num_gpus=1))
    told.reconfigure({"max_batch_size": None})
    assert told.max_batch_size == 7
