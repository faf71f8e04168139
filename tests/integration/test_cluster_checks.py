"""Pre-flight checks against a cluster: shared storage on multi-node clusters, reachability."""

from __future__ import annotations

import pytest

from core.errors import UserError
from search.engine import cluster
from tests.conftest import free_port

pytestmark = pytest.mark.integration

TWO_NODES = [{"Alive": True, "NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1"},
             {"Alive": True, "NodeID": "b" * 56, "NodeManagerAddress": "10.0.0.2"}]


def test_node_local_storage_on_a_multi_node_cluster_is_refused(monkeypatch, tmp_path):
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: TWO_NODES)
    monkeypatch.setattr(cluster, "_nodes_not_seeing", lambda probe, token, nodes: ["10.0.0.2/bbbbbbbb"])
    with pytest.raises(UserError, match=r"is not shared: node\(s\) 10.0.0.2/bbbbbbbb cannot read it"):
        cluster.check_shared_storage(str(tmp_path), is_remote_uri=False)
    assert not list(tmp_path.iterdir()), "the probe file was left behind"


def test_shared_storage_and_cloud_uris_pass(monkeypatch, tmp_path):
    import ray

    monkeypatch.setattr(ray, "nodes", lambda: TWO_NODES)
    seen = []
    monkeypatch.setattr(cluster, "_nodes_not_seeing", lambda probe, token, nodes: seen.append(probe) or [])
    cluster.check_shared_storage(str(tmp_path), is_remote_uri=False)
    cluster.check_shared_storage("s3://bucket/sweeps", is_remote_uri=True)
    assert len(seen) == 1  # a cloud URI is shared by definition, never probed


def test_the_probe_really_reads_the_file_on_every_node(ray_head, tmp_path):
    import ray

    ray.init(address=ray_head.address, logging_level="ERROR")
    try:
        probe = tmp_path / "probe"
        probe.write_text("token")
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert cluster._nodes_not_seeing(str(probe), "token", nodes) == []
        assert len(cluster._nodes_not_seeing(str(tmp_path / "missing"), "token", nodes)) == len(nodes)
        # A node that died after ray.nodes() still listed it (Ray takes a while to notice) is skipped, not
        # an error that stops the sweep: a schedule's tick right after a worker was lost met this.
        gone = {"NodeManagerAddress": "10.0.0.9", "NodeID": "ab" * 28}  # no such node
        assert cluster._nodes_not_seeing(str(probe), "token", [*nodes, gone]) == []
    finally:
        ray.shutdown()


def test_an_address_nobody_answers_is_reported_at_once():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=f"cannot reach Ray at {address}"):
        cluster.check_reachable(address)
