"""Connecting to Ray (a local cluster or an existing one) and checking it before a sweep."""

from __future__ import annotations

import logging
import os
import signal
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.errors import UserError

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"
SHARED_STORAGE_PROBE_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # the launcher config `ray up` leaves on the head


def connect(address: str | None, dashboard_host: str = LOCAL_HOST, quiet: bool = False,
            auth_disabled: bool = False, runtime_env: dict | None = None) -> str:
    """Start a local Ray (no `address`) or connect to `address` (the flag, else `RAY_ADDRESS`).

    Ray 2.60 turns token authentication on for a local cluster and, when connecting,
    uses the token in `RAY_AUTH_TOKEN` or `~/.ray/auth_token`; we leave that on and
    only warn when someone turned it off (`auth_disabled`: RAY_AUTH_MODE=disabled).
    `runtime_env` is Ray's runtime environment of the job (the sweep's own code). Returns a
    description of the cluster.
    """
    import ray

    if ray.is_initialized():  # a scheduler's later ticks reuse the connection
        return describe_cluster(address)
    if auth_disabled:
        log.warning("warning: RAY_AUTH_MODE=disabled: anyone who can reach this cluster can run code on it")
    kwargs = {"log_to_driver": not quiet, "configure_logging": True, "logging_level": logging.WARNING,
              "runtime_env": runtime_env}
    try:
        if address:
            check_reachable(address)
            context = ray.init(address=address, **kwargs)
        else:  # "local": a new Ray of our own, never whatever `ray start` left on this machine
            if dashboard_host != LOCAL_HOST:
                log.warning("warning: the Ray dashboard will listen on %s, reachable from other machines",
                            dashboard_host)
            context = ray.init(address="local", _node_ip_address=LOCAL_HOST, dashboard_host=dashboard_host,
                               **kwargs)
    except ray.exceptions.AuthenticationError as err:
        raise UserError(f"Ray at {address or 'local'} refused the connection: {err}") from None
    except ConnectionError as err:
        raise UserError(f"Ray at {address} refused the connection ({err}); the address answers, so check "
                        "the cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token) and that it runs Ray "
                        f"{ray.__version__}") from None
    stop_gracefully_on_sigterm()  # ray.init put a handler in place that aborts the driver
    dashboard = getattr(context, "dashboard_url", None)
    return describe_cluster(address) + (f"; dashboard http://{dashboard}" if dashboard else "")


def stop_gracefully_on_sigterm() -> None:
    """SIGTERM (systemd, Kubernetes, `kill`) stops like Ctrl-C: Tune saves the sweep and stops."""
    signal.signal(signal.SIGTERM, _sigterm_as_sigint)


def _sigterm_as_sigint(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGINT)


def describe_cluster(address: str | None) -> str:
    import ray

    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    return (f"Ray {'at ' + address if address else 'local'}: {len(nodes)} node(s), "
            f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")


def check_reachable(address: str) -> None:
    """Fail fast, with the address in the message, when HOST:PORT does not answer.

    Ray itself would wait for minutes on a dead address. `auto` and `ray://` are left to Ray.
    """
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise UserError(f"cannot reach Ray at {address}: {err.strerror or err}; is the cluster up "
                        "(ray up cluster.yaml / ray start --head)?") from None


def trials_per_node(resources: Mapping[str, float], cpu_per_trial: float, gpu_per_trial: float) -> int:
    """How many trials fit on one node with `resources` (a trial never spans nodes)."""
    fits = [resources.get("CPU", 0) / cpu_per_trial]
    if gpu_per_trial:
        fits.append(resources.get("GPU", 0) / gpu_per_trial)
    return int(min(fits) + 1e-9)


def slots(cpu_per_trial: float, gpu_per_trial: float) -> int:
    """How many trials the cluster's resources, as they are now, can run at once."""
    import ray

    return max(1, trials_per_node(ray.cluster_resources(), cpu_per_trial, gpu_per_trial))


@dataclass(frozen=True)
class Growth:
    """What an autoscaling cluster can grow to, read from its launcher config."""

    trials: int  # trials that can run at once when every node type is at its `max_workers`
    by_type: dict[str, tuple[int, int]]  # node type -> (nodes at most, trials per node)

    def describe(self) -> str:
        parts = ", ".join(f"{name} {nodes}×{per_node}" for name, (nodes, per_node) in self.by_type.items())
        return f"up to {self.trials} trials at once as the autoscaler adds nodes ({parts})"


def autoscaling_growth(cpu_per_trial: float, gpu_per_trial: float,
                       config_path: str | Path = BOOTSTRAP_CONFIG) -> Growth | None:
    """On the head of a cluster the launcher started (`ray up`; the autoscaler reads the same
    file, and Tune checks it to tell an autoscaling cluster), the most trials the cluster can run
    at once: every worker type at its `max_workers` (within the cluster's `max_workers`), the
    head as configured. None where there is no such file (a local Ray, a fixed cluster)."""
    path = Path(config_path).expanduser()
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as err:
        log.warning("warning: cannot read the autoscaler config %s (%s); trials at once follow the "
                    "resources up now", path, err)
        return None
    node_types = (config or {}).get("available_node_types") or {}
    head = config.get("head_node_type")
    budget = config.get("max_workers")
    budget = float("inf") if budget is None else int(budget)
    by_type: dict[str, tuple[int, int]] = {}
    workers = []
    for name, spec in node_types.items():
        per_node = trials_per_node((spec or {}).get("resources") or {}, cpu_per_trial, gpu_per_trial)
        if name == head:
            by_type[name] = (1, per_node)
        else:
            workers.append((per_node, name, int((spec or {}).get("max_workers", 0))))
    for per_node, name, most in sorted(workers, reverse=True):  # the roomiest types first
        nodes = int(min(most, budget))
        budget -= nodes
        by_type[name] = (nodes, per_node)
    trials = sum(nodes * per_node for nodes, per_node in by_type.values())
    return Growth(trials, by_type)


def trial_slots(cpu_per_trial: float, gpu_per_trial: float, on_cluster: bool) -> tuple[int, str | None]:
    """How many trials to keep in flight, and why when it is not what is up now.

    On an autoscaling cluster, what it can grow to: trials beyond what runs now wait as
    resource demand, which is what makes the autoscaler add workers. Elsewhere (a local Ray,
    a fixed cluster), what the resources up now can run.
    """
    now = slots(cpu_per_trial, gpu_per_trial)
    growth = autoscaling_growth(cpu_per_trial, gpu_per_trial, BOOTSTRAP_CONFIG) if on_cluster else None
    if growth is None or growth.trials <= now:  # no autoscaler, or a config that knows less than what is up
        return now, None
    return growth.trials, growth.describe()


def check_local_resources(cpu_per_trial: float, gpu_per_trial: float) -> None:
    """Refuse a sweep whose trials could never start on the local cluster we started.

    On a cluster from `ray up` the autoscaler may add the nodes later, so this is only
    for the local case.
    """
    import ray

    resources = ray.cluster_resources()
    if gpu_per_trial and resources.get("GPU", 0) < gpu_per_trial:
        raise UserError(
            f"resources.gpu is {gpu_per_trial:g}, but this machine has {resources.get('GPU', 0):g} GPUs"
        )
    if cpu_per_trial > resources.get("CPU", 0):
        raise UserError(
            f"resources.cpu is {cpu_per_trial:g}, but this machine has {resources.get('CPU', 0):g} CPUs"
        )


def check_shared_storage(storage_uri: str, is_remote_uri: bool) -> None:
    """On a multi-node cluster, prove every node sees the Tune storage, or say why not.

    Trials move between nodes on failure and restore from checkpoints in storage; a
    node-local path would silently lose them. A cloud URI is shared by definition; a
    path is probed by writing a token file here and reading it on every node.
    """
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) <= 1 or is_remote_uri:
        return
    token = uuid.uuid4().hex
    probe = os.path.join(storage_uri, f".shared-storage-probe-{token}")
    with open(probe, "w") as f:
        f.write(token)
    try:
        blind = _nodes_not_seeing(probe, token, nodes)
    finally:
        os.unlink(probe)
    if blind:
        raise UserError(
            f"storage {storage_uri} is not shared: node(s) {', '.join(blind)} cannot read it. "
            "A multi-node sweep needs a cloud URI (s3://…, gs://…) or a shared file system "
            "mounted at the same path on every node"
        )


def _nodes_not_seeing(probe: str, token: str, nodes: list[dict]) -> list[str]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def read_probe(path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""

    pending = {
        n["NodeManagerAddress"] + "/" + n["NodeID"][:8]: read_probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(probe)
        for n in nodes
    }
    blind = []
    for name, ref in pending.items():
        try:
            seen = ray.get(ref, timeout=SHARED_STORAGE_PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            seen = ""
        except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError,
                ray.exceptions.WorkerCrashedError):
            # The node died after `ray.nodes()` still listed it (Ray notices a lost node only after a
            # while): it runs no trial, so there is nothing to check there.
            log.info("node %s left the cluster during the shared-storage check", name)
            continue
        if seen != token:
            blind.append(name)
    return blind
