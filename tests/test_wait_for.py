"""tests/conftest.py's wait_for: retries what is not ready yet, fails at once on a death."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import GaveUp, wait_for


def test_returns_the_first_truthy_value_after_transient_errors() -> None:
    calls = []

    def condition() -> str | None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("not listening yet")
        return "up"

    assert wait_for(condition, 30, "a server", interval=0.01) == "up"
    assert len(calls) == 3


def test_a_condition_that_gives_up_fails_at_once() -> None:
    calls = []

    def condition() -> bool:
        calls.append(1)
        raise GaveUp("the server exited: bind failed")

    with pytest.raises(GaveUp, match="bind failed"):
        wait_for(condition, 600, "a server")
    assert len(calls) == 1


def test_an_assertion_in_the_condition_is_not_swallowed() -> None:
    calls = []

    def condition() -> bool:
        calls.append(1)
        raise AssertionError("the process died")

    with pytest.raises(AssertionError, match="the process died"):
        wait_for(condition, 600, "a server")
    assert len(calls) == 1


def test_a_dead_process_fails_the_wait_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    calls = []

    def condition() -> bool:
        calls.append(1)
        return False

    with pytest.raises(GaveUp, match=r"waiting for a server: .* exited with status 3"):
        wait_for(condition, 600, "a server", alive=[proc])
    assert calls == [1]  # looked at once more: it might have done its job before dying


def test_a_process_that_did_its_job_and_exited_is_a_success() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "print('done')"], stdout=subprocess.PIPE)
    out, _ = proc.communicate()
    assert wait_for(lambda: out.strip() == b"done", 600, "the output", alive=proc) is True


def test_a_condition_that_never_holds_times_out_naming_the_last_error() -> None:
    def condition() -> bool:
        raise ConnectionRefusedError("refused")

    with pytest.raises(AssertionError, match=r"timed out .* a server \(last error: refused\)"):
        wait_for(condition, 0.3, "a server", interval=0.05)
