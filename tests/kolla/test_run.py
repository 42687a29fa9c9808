"""The deployer container for a step, and how a failure is told (pure parts)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from appliance.drivers.docker import Mount
from appliance.errors import ConfigError
from appliance.kolla.deployer import run_argv
from appliance.kolla.output import Failure, PullFailure
from appliance.kolla.run import Access, Outcome, describe_failure, log_path, plan
from tests.kolla.helpers import site


def test_plan_mounts_env_and_argv() -> None:
    config = site(
        kolla={"config_dir": "/etc/kpc/kolla"},
        services={"prefix": "kpcx"},
        images={"prefix": "kpcx"},
    )
    call = plan(
        config,
        "deploy",
        ["--tags", "keystone"],
        Access(Path("/root/.ssh/id_ed25519"), "/tmp/ssh-x/agent.1"),
        Path("/var/lib/kpc/kolla-run-1"),
        Path("/etc/kpc/kolla-files"),
    )
    assert run_argv(call) == [
        "run", "--rm", "--init", "--name", "kpcx-kolla", "--workdir", "/etc/kolla",
        "--pull", "never",
        "--network", "host",
        "--volume", "/etc/kpc/kolla:/etc/kolla:rw",
        "--volume", "/etc/kpc/kolla-files:/usr/share/kpc/kolla:ro",
        "--volume", "/var/lib/kpc/kolla-run-1:/run/kpc:rw",
        "--volume", "/root/.ssh/id_ed25519:/run/kpc/ssh/id:ro",
        "--volume", "/tmp/ssh-x/agent.1:/run/kpc/agent.sock:rw",
        "--env", "ANSIBLE_CONFIG=/usr/share/kpc/kolla/ansible.cfg",
        "--env", "ANSIBLE_PRIVATE_KEY_FILE=/run/kpc/ssh/id",
        "--env", "SSH_AUTH_SOCK=/run/kpc/agent.sock",
        "kpcx/kolla_deployer:latest",
        "kolla-ansible", "deploy", "--configdir", "/etc/kolla", "--inventory",
        "/etc/kolla/inventory", "--tags", "keystone",
    ]  # fmt: skip
    assert Mount(Path("/root/.ssh/id_ed25519"), "/run/kpc/ssh/id", True) in call.mounts


def test_no_key_and_no_agent_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no SSH key for kolla-ansible"):
        Access(None, None)


def test_log_path() -> None:
    config = site(paths={"log_dir": "/var/log/kpc"})
    when = datetime(2024, 5, 6, 7, 8, 9)
    assert log_path(config, "prechecks", when) == Path(
        "/var/log/kpc/kolla/20240506T070809-prechecks.log"
    )


def test_failure_story_groups_hosts_with_the_same_message() -> None:
    outcome = Outcome(
        "prechecks",
        2,
        Path("/var/log/kpc/kolla/x.log"),
        (
            Failure("node1", "memcached : Checking free port for Memcached", "Timeout"),
            Failure("node2", "memcached : Checking free port for Memcached", "Timeout"),
            Failure("node3", "Gather facts", "Connection refused", unreachable=True),
        ),
        (),
    )
    message, hint = describe_failure(outcome)
    assert message == (
        "kolla prechecks failed (exit code 2):\n"
        "  node1, node2: memcached : Checking free port for Memcached: Timeout\n"
        "  node3: unreachable: Connection refused"
    )
    assert hint == (
        "fix the problem above and run 'kpc kolla prechecks' again; "
        "full log: /var/log/kpc/kolla/x.log"
    )


def test_pull_failures_name_image_and_registry() -> None:
    image = "10.0.0.1:5000/openstack.kolla/cron:2026.2-debian-trixie"
    pulls = (
        PullFailure("node1", image, "10.0.0.1:5000", "connection refused"),
        PullFailure("node2", image, "10.0.0.1:5000", "connection refused"),
    )
    message, hint = describe_failure(Outcome("deploy", 2, Path("/l.log"), (), pulls))
    assert message == (
        "kolla deploy failed (exit code 2):\n"
        f"  node1, node2: cannot pull image {image} from registry 10.0.0.1:5000: "
        "connection refused"
    )
    assert "kpc registry mirror" in hint


def test_a_failure_without_failed_tasks_points_at_the_log() -> None:
    message, _ = describe_failure(Outcome("deploy", 1, Path("/l.log"), (), ()))
    assert message == "kolla deploy failed (exit code 1); the last lines of the log show why"


def test_a_stopped_run_says_so_and_that_it_can_run_again() -> None:
    message, hint = describe_failure(Outcome("deploy", 143, Path("/l.log"), (), ()))
    assert message.startswith("kolla deploy was stopped before it finished (SIGTERM")
    assert "run 'kpc kolla deploy' again" in hint and "/l.log" in hint
