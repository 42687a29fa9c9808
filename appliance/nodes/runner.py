"""Run one job per node in parallel, never more than ``fanout`` at once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(
    items: Sequence[T],
    work: Callable[[T], R],
    fanout: int,
    on_result: Callable[[T, R], None] | None = None,
) -> list[R]:
    """``work(item)`` for every item on at most ``fanout`` threads; results in item order.

    ``work`` must turn expected failures into results: an exception escaping it is a bug,
    and is re-raised here after the jobs not yet started are cancelled. ``on_result`` runs
    in the calling thread as each job finishes (for progress output).
    """
    if not items:
        return []
    results: dict[int, R] = {}
    pool = ThreadPoolExecutor(
        max_workers=max(1, min(fanout, len(items))), thread_name_prefix="kpc-node"
    )
    try:
        futures: dict[Future[R], int] = {pool.submit(work, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            index = futures[future]
            result = future.result()
            results[index] = result
            if on_result is not None:
                on_result(items[index], result)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [results[i] for i in range(len(items))]
