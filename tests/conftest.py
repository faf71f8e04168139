"""Shared test helpers: data location, the CLI in a subprocess, Ray clusters started and stopped by pid."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIRE_ALL_ENV = "SWEEP_TESTS_REQUIRE_ALL"  # CI sets it: a missing resource fails instead of skipping
REQUIRE_GPU_ENV = "SWEEP_TESTS_REQUIRE_GPU"  # a CI machine with a GPU sets it: no CUDA fails instead of skipping

# Token authentication stays on in every test: this process, the CLI subprocesses and the
# clusters the tests start all use one test token (never the user's ~/.ray/auth_token).
# Set before anything imports Ray, which reads the mode once.
TEST_RAY_TOKEN = secrets.token_hex(16)
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = TEST_RAY_TOKEN
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.pop("RAY_ADDRESS", None)


def require(available: bool, what: str, promised_by: str = REQUIRE_ALL_ENV) -> None:
    """Skip when `what` is not installed here; where it is promised (`promised_by` is set: CI sets
    SWEEP_TESTS_REQUIRE_ALL=1, a machine with a GPU SWEEP_TESTS_REQUIRE_GPU=1) fail instead."""
    if available:
        return
    if os.environ.get(promised_by):
        pytest.fail(f"{what} is required here ({promised_by} is set) but not available")
    pytest.skip(f"{what} not installed")


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    """The official MNIST files (CI points MNIST_DIR at ../shared/data/mnist)."""
    path = os.environ.get("MNIST_DIR")
    require(bool(path) and Path(path).is_dir(), "MNIST files (set MNIST_DIR)")
    return path


@pytest.fixture(scope="session")
def small_data(mnist_dir: str):  # type: ignore[no-untyped-def]
    from trainables.data import load_data

    return load_data("mnist", mnist_dir, subset=600, split_seed=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """Environment for CLI subprocesses: the test token, an empty cache and state directory, no
    outside tracking URI."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(tmp_path / "cache"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 600) -> CliResult:
    """`python -m search ARGS` in a subprocess, as a user would run `tune ARGS`."""
    proc = subprocess.run([sys.executable, "-m", "search", *args], env=env, cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_cli(args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start `python -m search ARGS` in the background, output to `log_path`."""
    log = log_path.open("w")
    return subprocess.Popen([sys.executable, "-m", "search", *args], env=env, cwd=cwd or REPO,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Stop a process we started by pid (SIGTERM, so it shuts down what it started), then
    SIGKILL whatever is left of its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)


@dataclass
class RayNode:
    proc: subprocess.Popen
    address: str


def ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


def start_ray_node(env: dict[str, str], num_cpus: int, head_address: str | None = None,
                   extra: tuple[str, ...] = (), prefix: tuple[str, ...] = ()) -> RayNode:
    """`ray start --block` on 127.0.0.1 (a head, or a worker joining `head_address`); `prefix` runs it
    through another command (`nsenter …`, which execs it: the pid stays the node's)."""
    args = [*prefix, ray_bin(), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
            "--disable-usage-stats", *extra]
    if head_address is None:
        port = free_port()
        args += ["--head", f"--port={port}", "--include-dashboard=false"]
        address = f"127.0.0.1:{port}"
    else:
        args += [f"--address={head_address}"]
        address = head_address
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return RayNode(proc, address)


WAIT_FOR_NODES = """
import ray, sys, time
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.time() + float(sys.argv[3])
while sum(n["Alive"] for n in ray.nodes()) < int(sys.argv[2]):
    if time.time() > deadline:
        sys.exit(1)
    time.sleep(0.5)
"""


def wait_for_nodes(address: str, env: dict[str, str], count: int, timeout_s: float = 90) -> None:
    """Block until the cluster at `address` has `count` alive nodes."""
    deadline = time.time() + timeout_s
    while True:
        proc = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, address, str(count), str(timeout_s)],
                              env=env, capture_output=True, text=True, timeout=timeout_s + 30)
        if proc.returncode == 0:
            return
        if time.time() > deadline:
            raise RuntimeError(f"Ray at {address} did not reach {count} nodes: {proc.stderr[-2000:]}")
        time.sleep(1)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayNode]:
    """One local Ray head (2 CPUs, token auth) shared by the integration tests; stopped by pid."""
    env = dict(os.environ)
    node = start_ray_node(env, num_cpus=2)
    try:
        wait_for_nodes(node.address, env, 1)
        yield node
    finally:
        stop_process(node.proc)


@dataclass
class S3Server:
    """A loopback S3-compatible server (moto's) with one bucket; `env` points AWS clients at it."""

    proc: subprocess.Popen
    endpoint: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        # The standard AWS variables: pyarrow (Tune's storage, this tool) and boto3 both read them.
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{path}"

    def client_options(self) -> dict[str, str]:
        return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@contextlib.contextmanager
def running_s3_server(log_path: Path, check_credentials: bool = False) -> Iterator[S3Server]:
    """`moto_server` on 127.0.0.1 with the bucket `sweeps-test`, stopped by pid. With
    `check_credentials` it refuses every key (moto then checks signatures against its own IAM)."""
    binary = Path(sys.executable).parent / "moto_server"
    require(binary.exists(), "moto_server (pip install 'moto[s3]' flask-cors)")
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="1" if check_credentials else "inf")
    proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log_path.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(proc, f"http://127.0.0.1:{port}", "sweeps-test")
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log_path.read_text()}") from None
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=server.endpoint, **server.client_options()).create_bucket(Bucket=server.bucket)
        yield server
    finally:
        stop_process(proc)


@pytest.fixture
def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A loopback S3 server with the bucket `sweeps-test`; this process's environment points at it."""
    with running_s3_server(tmp_path / "moto.log") as server:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        yield server
