"""How many trials a sweep keeps in flight: what is up now, or what an autoscaler can grow to."""

from __future__ import annotations

import yaml

from search.engine import cluster
from search.engine.cluster import autoscaling_growth, trials_per_node


def write_config(path, **node_types):
    config = {"max_workers": 3, "head_node_type": "head",
              "available_node_types": {"head": {"resources": {"CPU": 0}}, **node_types}}
    path.write_text(yaml.safe_dump(config))
    return path


def test_trials_per_node_is_bound_by_every_resource_a_trial_needs():
    assert trials_per_node({"CPU": 16}, 1, 0) == 16
    assert trials_per_node({"CPU": 4, "GPU": 1}, 1, 0.25) == 4
    assert trials_per_node({"CPU": 16, "GPU": 1}, 1, 0.5) == 2
    assert trials_per_node({"CPU": 16}, 1, 0.25) == 0  # no GPU on that node type
    assert trials_per_node({"CPU": 3}, 1.5, 0) == 2


def test_growth_fills_the_clusters_max_workers_with_the_roomiest_types_first(tmp_path):
    path = write_config(tmp_path / "c.yaml", small={"resources": {"CPU": 2}, "max_workers": 5},
                        big={"resources": {"CPU": 8}, "max_workers": 2})
    growth = autoscaling_growth(1, 0, path)
    assert growth.by_type == {"head": (1, 0), "big": (2, 8), "small": (1, 2)}
    assert growth.trials == 18
    assert "up to 18 trials at once" in growth.describe()


def test_a_fixed_cluster_keeps_todays_rule(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "BOOTSTRAP_CONFIG", str(tmp_path / "absent.yaml"))
    monkeypatch.setattr(cluster, "slots", lambda cpu, gpu: 2)
    assert cluster.trial_slots(1, 0, on_cluster=True) == (2, None)


def test_an_autoscaling_cluster_is_bound_by_what_it_can_grow_to(tmp_path, monkeypatch):
    path = write_config(tmp_path / "c.yaml", worker={"resources": {"CPU": 1}, "max_workers": 2})
    monkeypatch.setattr(cluster, "BOOTSTRAP_CONFIG", str(path))
    monkeypatch.setattr(cluster, "slots", lambda cpu, gpu: 1)
    slots, why = cluster.trial_slots(1, 0, on_cluster=True)
    assert slots == 2 and "as the autoscaler adds nodes" in why
    assert cluster.trial_slots(1, 0, on_cluster=False) == (1, None)  # a local Ray: what is up
    # A config that knows less than what is up (no GPU node type here; resources not filled in, as
    # with Ray's local provider) never lowers the number below what the cluster runs now.
    assert cluster.trial_slots(1, 1, on_cluster=True) == (1, None)
