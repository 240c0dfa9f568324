"""deployments/ray_private.py, the one adapter for Ray's private names: checked on Ray 2.60.0, and
outside the checked versions it refuses with what to do instead of failing somewhere deep."""
import pytest

ray = pytest.importorskip("ray")


def test_checked_versions_name_the_installed_ray():
    from deployments import ray_private

    assert ray_private.CHECKED_RAY_VERSIONS == ("2.60.0",)
    assert ray_private.check_version() == ray.__version__ == "2.60.0", (
        f"Ray {ray.__version__}: re-check deployments/ray_private.py against it")


def test_local_ray_binds_to_loopback_without_a_dashboard():
    from deployments.ray_private import local_init_kwargs

    kw = local_init_kwargs(2, 1 << 28, metrics_port=9999)
    assert kw == {"num_cpus": 2, "include_dashboard": False, "object_store_memory": 1 << 28,
                  "_node_ip_address": "127.0.0.1", "_metrics_export_port": 9999}
    assert "_metrics_export_port" not in local_init_kwargs(2, 1 << 28)


def test_another_ray_is_refused_with_what_to_do(monkeypatch):
    from deployments import ray_private

    monkeypatch.setattr(ray, "__version__", "2.61.0")
    for call in (lambda: ray_private.local_init_kwargs(2, 1 << 28),
                 lambda: ray_private.prepare_and_validate_cluster({})):
        with pytest.raises(RuntimeError, match=r"Ray 2\.61\.0 .*CHECKED_RAY_VERSIONS"):
            call()
