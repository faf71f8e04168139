"""`ray up` end to end with Ray's `local` provider over SSH to 127.0.0.1, `tune run smoke` there, `ray down`.

The cluster launcher does what it does on AWS: it reaches the head over SSH, syncs the file mounts
(this repository) with rsync, runs the start commands, and `ray exec` runs the sweep on the head. The
test starts its own `sshd` on a free loopback port (reached through `nc`, since Ray's auth config has
no port), with a throw-away host key, client key and HOME. The head node is started with
`ray start --block` in a process group of its own and its pid written down; a `ray` wrapper first on
the SSH session's PATH turns the launcher's `ray stop` into stopping that process group, so neither
`ray down` nor this test touches any other Ray on the machine. sshd and the head are stopped by pid
afterwards even when the test fails.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TEST_RAY_TOKEN, free_port, ray_bin, require, stop_process

pytestmark = pytest.mark.slow

SSHD = "/usr/sbin/sshd"
TOOLS = ("ssh", "ssh-keygen", "rsync", "nc")

RAY_WRAPPER = """#!/bin/bash
# `ray stop` from the cluster launcher stops this test's head (its process group), nothing else.
if [ "$1" = stop ]; then
    if [ -f {pidfile} ]; then
        group=$(cat {pidfile})
        kill -TERM -- -"$group" 2>/dev/null
        for i in $(seq 30); do kill -0 -- -"$group" 2>/dev/null || break; sleep 1; done
        kill -KILL -- -"$group" 2>/dev/null
        rm -f {pidfile}
    fi
    exit 0
fi
exec {ray} "$@"
"""

SSHD_CONFIG = """ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
SetEnv {env}
"""


def _run(args: list[str], env: dict[str, str], timeout: float, log: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    with log.open("a") as f:
        f.write(f"$ {' '.join(args)}\n{proc.stdout}\n{proc.stderr}\n(exit {proc.returncode})\n")
    return proc


@pytest.fixture
def sshd(tmp_path, mnist_dir):
    require(Path(SSHD).exists() and all(shutil.which(t) for t in TOOLS), "sshd, ssh, rsync and nc")
    root = tmp_path / "sshd"
    home = tmp_path / "home"
    wrappers = tmp_path / "bin"
    for folder in (root, home, wrappers):
        folder.mkdir()
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    pidfile = tmp_path / "head.pid"
    ray = wrappers / "ray"
    ray.write_text(RAY_WRAPPER.format(pidfile=pidfile, ray=ray_bin()))
    ray.chmod(0o755)
    venv_bin = Path(sys.executable).parent
    session_env = {"PATH": f"{wrappers}:{venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
                   "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TEST_RAY_TOKEN, "MNIST_DIR": mnist_dir,
                   "RAY_USAGE_STATS_ENABLED": "0", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    # The launcher runs commands in `bash --login`, whose /etc/profile resets PATH; ~/.bashrc comes after it.
    (home / ".bashrc").write_text(f"export PATH=\"{session_env['PATH']}\"\n")
    port = free_port()
    config = root / "sshd_config"
    config.write_text(SSHD_CONFIG.format(port=port, host_key=root / "host_key", root=root,
                                         env=" ".join(f'"{k}={v}"' for k, v in session_env.items())))
    log = tmp_path / "sshd.log"
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 30
        probe = ["ssh", "-i", str(root / "client_key"), "-o", "StrictHostKeyChecking=no", "-o",
                 "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-p", str(port),
                 f"{getpass.getuser()}@127.0.0.1", "echo $HOME"]
        while subprocess.run(probe, capture_output=True, text=True).stdout.strip() != str(home):
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        yield {"port": port, "key": root / "client_key", "home": home, "pidfile": pidfile}
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.killpg(int(pidfile.read_text()), signal.SIGKILL)  # the head, if `ray down` did not stop it
        stop_process(proc)


def test_ray_up_runs_a_sweep_on_the_head_and_ray_down_stops_it(sshd, tmp_path, base_env):
    head_port = free_port()
    storage = tmp_path / "results"
    name = f"sweeps-test-{uuid.uuid4().hex[:8]}"
    # A session of its own; the process writes its own pid (setsid may fork, so `$!` is not it).
    start_head = (f"setsid sh -c 'echo $$ > {sshd['pidfile']}; exec ray start --head --block --port={head_port} "
                  "--node-ip-address=127.0.0.1 --num-cpus=2 --include-dashboard=false --disable-usage-stats "
                  f"--autoscaling-config=~/ray_bootstrap_config.yaml' > {tmp_path}/head.log 2>&1 < /dev/null &")
    wait_for_head = (f"for i in $(seq 90); do ray status --address=127.0.0.1:{head_port} > /dev/null 2>&1 "
                     "&& exit 0; sleep 1; done; exit 1")
    cluster = {
        "cluster_name": name,
        "provider": {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
        "auth": {"ssh_user": getpass.getuser(), "ssh_private_key": str(sshd["key"]),
                 "ssh_proxy_command": f"nc 127.0.0.1 {sshd['port']}"},
        "file_mounts": {"~/mnist-sweeps": str(REPO)},
        "rsync_exclude": [".venv", ".git", "runs", "test-artifacts", "bench/results", "**/__pycache__"],
        "setup_commands": [],  # the head is this machine: the project is already installed
        "head_start_ray_commands": ["ray stop", start_head, wait_for_head],
        "worker_start_ray_commands": [],
    }
    config = tmp_path / "cluster-local.yaml"
    config.write_text(yaml.safe_dump(cluster))
    log = tmp_path / "ray-up.log"
    try:
        up = _run([ray_bin(), "up", "-y", "--no-config-cache", str(config)], base_env, 300, log)
        assert up.returncode == 0, log.read_text()[-4000:]
        mounted = sshd["home"] / "mnist-sweeps"
        assert (mounted / "spaces" / "smoke.yaml").is_file() and not (mounted / ".venv").exists()
        head_pgid = int(sshd["pidfile"].read_text())
        sweep = _run([ray_bin(), "exec", str(config),
                      f"cd ~/mnist-sweeps && tune run smoke --address 127.0.0.1:{head_port} --name over-ssh "
                      f"--storage {storage} --tracking-uri sqlite:///{tmp_path}/mlflow.db"], base_env, 420, log)
        assert sweep.returncode == 0, log.read_text()[-4000:]
        assert "best trial" in sweep.stdout + sweep.stderr
        results = json.loads((storage / "over-ssh" / "results.json").read_text())
        assert results["counts"]["errored"] == 0 and results["counts"]["unfinished"] == 0
        assert results["best"]["test_acc"] > 0.5
    finally:
        down = _run([ray_bin(), "down", "-y", str(config)], base_env, 120, log)
    assert down.returncode == 0, log.read_text()[-4000:]
    assert not sshd["pidfile"].exists(), "`ray down` did not stop the head"
    deadline = time.time() + 60
    while True:  # the head's process group is gone
        try:
            os.killpg(head_pgid, 0)
        except ProcessLookupError:
            break
        assert time.time() < deadline, "the head's processes outlived `ray down`"
        time.sleep(0.5)
