"""Reading BuildKit's plain progress (pure), on output captured from real builds here."""

from __future__ import annotations

from pathlib import Path

from appliance.images import buildlog

DATA = Path(__file__).parent / "data"


def lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def test_failure_report_shows_the_failing_step_and_its_output() -> None:
    report = buildlog.failure_report(lines("buildkit-failure.log"))
    assert report.splitlines()[0] == (
        'failing step: [3/3] RUN echo "step output line" && ls /nonexistent'
    )
    assert "  | step output line" in report
    assert "  | ls: cannot access '/nonexistent': No such file or directory" in report
    assert report.rstrip().endswith("exit code: 2")
    assert "hello" not in report  # another step's output


def test_failure_without_a_failing_step_falls_back_to_the_last_lines() -> None:
    report = buildlog.failure_report(
        ["#1 [internal] load build definition from Dockerfile", "error: dockerfile parse error"]
    )
    assert report == "error: dockerfile parse error"


def test_cache_summary_and_step_titles() -> None:
    cached = lines("buildkit-cached.log")
    assert buildlog.cache_summary(cached) == (1, 1)
    failed = lines("buildkit-failure.log")
    assert buildlog.cache_summary(failed) == (2, 1)
    titles = [t for t in map(buildlog.step_progress, failed) if t]
    assert titles[0].endswith("] FROM docker.io/kpc/base:bookworm")
    assert titles[-1] == '[3/3] RUN echo "step output line" && ls /nonexistent'
    assert all(not t.startswith("[internal]") for t in titles)
