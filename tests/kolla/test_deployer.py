"""One-shot deployer containers on the real engine: exit codes, busy name, interruption."""

from __future__ import annotations

import os

import pytest

from appliance.drivers.docker import Docker, ImageMissing
from appliance.kolla.deployer import Call, DeployerBusy, output, stream
from tests.conftest import require_docker, wait_for
from tests.kolla.conftest import BASE, docker

pytestmark = pytest.mark.docker
NAME = "kpch-deployer-test"


@pytest.fixture
def engine() -> Docker:
    require_docker()
    docker("rm", "-f", NAME, check=False)
    yield Docker(os.environ)
    docker("rm", "-f", NAME, check=False)


def call(*argv: str) -> Call:
    return Call(image=BASE, name=NAME, argv=argv, network="none", workdir="/")


def test_exit_code_and_lines_pass_through(engine: Docker) -> None:
    lines: list[str] = []
    code = stream(engine, call("sh", "-c", "echo one; echo two >&2; exit 7"), lines.append)
    assert code == 7
    assert sorted(lines) == ["one", "two"]
    assert output(engine, call("echo", "captured")) == "captured\n"


def test_a_second_run_while_one_is_running_is_refused(engine: Docker) -> None:
    docker("run", "-d", "--rm", "--name", NAME, BASE, "sleep", "60")
    with pytest.raises(DeployerBusy, match="another Kolla run is in progress"):
        stream(engine, call("true"), lambda line: None)


def test_a_stopped_container_left_by_a_killed_run_does_not_block_the_next(
    engine: Docker,
) -> None:
    docker("create", "--name", NAME, BASE, "true")  # what a SIGKILLed kpc leaves behind
    lines: list[str] = []
    assert stream(engine, call("echo", "again"), lines.append) == 0
    assert lines == ["again"]


def test_a_missing_image_says_how_to_build_it(engine: Docker) -> None:
    missing = Call(image="kpch/no-such-image:latest", name=NAME, argv=("true",), network="none")
    with pytest.raises(ImageMissing) as caught:
        stream(engine, missing, lambda line: None)
    assert caught.value.hint == "build kpc's images first: kpc images build"


def test_interrupting_kpc_stops_the_container(engine: Docker) -> None:
    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stream(engine, call("sh", "-c", "echo started; sleep 300"), interrupt)

    def gone() -> bool:
        return docker("inspect", NAME, check=False).returncode != 0

    wait_for(gone, 20, f"container {NAME} to be removed")
