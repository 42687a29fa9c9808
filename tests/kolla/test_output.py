"""Reading Ansible's output: failed tasks and image pull failures (pure).

``data/deploy-pull-failure.txt`` is a real kolla-ansible 18.8.0 handler failure captured in
the lab (a node could not pull kolla-toolbox from a registry that was not running).
"""

from __future__ import annotations

import json
from pathlib import Path

from appliance.kolla.output import Failure, failures, pull_failure

DATA = Path(__file__).parent / "data"


def test_failed_and_unreachable_tasks_in_order() -> None:
    lines = [
        "TASK [prechecks : Checking the api_interface is present] ****",
        "ok: [node1]",
        'fatal: [node2]: FAILED! => {"changed": false, "msg": "interface eth0 not found"}',
        "TASK [Gather facts] ****",
        'fatal: [node3]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect to the '
        'host via ssh: Connection refused", "unreachable": true}',
        "TASK [common : Check nscd] ****",
        'fatal: [node1]: FAILED! => {"changed": false, "rc": 1, "msg": "non-zero return code",'
        ' "stderr": "pgrep: not found"}',
        "...ignoring",
        "TASK [memcached : Checking free port for Memcached] ****",
        'fatal: [node1]: FAILED! => {"changed": false, "elapsed": 1, "msg": "Timeout when '
        'waiting for 10.0.0.11:11211 to stop."}',
    ]
    assert failures(lines) == [
        Failure(
            "node2", "prechecks : Checking the api_interface is present", "interface eth0 not found"
        ),
        Failure(
            "node3",
            "Gather facts",
            "Failed to connect to the host via ssh: Connection refused",
            unreachable=True,
        ),
        Failure(
            "node1",
            "memcached : Checking free port for Memcached",
            "Timeout when waiting for 10.0.0.11:11211 to stop.",
        ),
    ]


def test_command_failures_show_stderr_and_loops_their_item() -> None:
    body = json.dumps({"msg": "non-zero return code", "rc": 2, "stderr": "docker: not found"})
    found = failures(["TASK [x] ***", f"failed: [n1] (item=docker) => {body}"])
    assert found == [Failure("n1", "x", "non-zero return code\ndocker: not found")]


def test_real_pull_failure_names_image_registry_and_reason() -> None:
    lines = (DATA / "deploy-pull-failure.txt").read_text(encoding="utf-8").splitlines()
    (failure,) = failures(lines)
    assert failure.host == "kpch-node1"
    assert failure.task == "common : Restart kolla-toolbox container"
    assert failure.message.startswith("docker.errors.APIError: 500 Server Error")
    pull = pull_failure(failure, ["127.0.0.1:5999"])
    assert pull is not None
    assert pull.image == "127.0.0.1:5999/openstack.kolla/kolla-toolbox:2024.1-debian-bookworm"
    assert pull.registry == "127.0.0.1:5999"
    assert pull.reason == "nothing answers at the registry address (connection refused)"


def test_manifest_unknown_from_kollas_own_message() -> None:
    failure = Failure(
        "n1",
        "common : Restart cron container",
        "Unknown error message: manifest for 10.0.0.1:5000/openstack.kolla/cron:2024.1-debian-"
        "bookworm not found: manifest unknown: manifest unknown",
    )
    pull = pull_failure(failure)
    assert pull is not None
    assert (pull.image, pull.registry) == (
        "10.0.0.1:5000/openstack.kolla/cron:2024.1-debian-bookworm",
        "10.0.0.1:5000",
    )
    assert pull.reason == "the registry does not have this image (manifest unknown)"


def test_other_failures_are_not_pulls() -> None:
    failure = Failure(
        "n1", "memcached : Checking free port", "Timeout when waiting for 10.0.0.11:11211"
    )
    assert pull_failure(failure) is None
