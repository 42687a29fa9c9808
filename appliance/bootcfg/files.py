"""``/assets/...``: kernels, initrds and disk images, streamed with sendfile.

aiohttp's FileResponse answers HEAD, single ``Range`` requests (206 with Content-Range,
416 when unsatisfiable), conditional requests, and sends the file with ``sendfile(2)``:
never read into memory. ``Range`` is judged first, per RFC 9110 14.2: a header that is not
one valid ``bytes`` range (another unit, bad syntax, a first position after the last,
several ranges) is ignored and the whole file served (200); ``bytes=-0`` is unsatisfiable
(416). The path is checked before any file is opened: no ``..``, no
hidden names (downloads in progress are ``.name.part``), nothing that resolves outside the
assets directory (a symlink inside the tree may point elsewhere inside it).
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

from aiohttp import hdrs, web

from appliance.bootcfg.common import not_found, service

CHUNK = 256 * 1024
_ONE_RANGE = re.compile(r"bytes=(?:(\d{1,18})-(\d{0,18})|-(\d{1,18}))")


class RangeVerdict(Enum):
    ABSENT = "absent"  # no Range: serve normally
    IGNORE = "ignore"  # not one valid byte range: serve the whole file (RFC 9110 14.2)
    SINGLE = "single"  # one syntactically valid range: FileResponse decides 206 or 416
    UNSATISFIABLE = "unsatisfiable"  # a valid range no byte can satisfy (bytes=-0)


def judge_range(header: str | None) -> RangeVerdict:
    """What to do with a request's Range header. Pure."""
    if header is None:
        return RangeVerdict.ABSENT
    match = _ONE_RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return RangeVerdict.IGNORE
    first, last, suffix = match.groups()
    if suffix is not None:
        return RangeVerdict.UNSATISFIABLE if int(suffix) == 0 else RangeVerdict.SINGLE
    if last and int(last) < int(first):
        return RangeVerdict.IGNORE
    return RangeVerdict.SINGLE


def asset_path(root: Path, tail: str) -> Path | None:
    """The file ``tail`` names under ``root``, or None when it is not a servable asset."""
    if not tail or "\x00" in tail or "\\" in tail or len(tail) > 1024:
        return None
    parts = tail.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    try:
        base = root.resolve(strict=True)
        path = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


async def asset(request: web.Request) -> web.StreamResponse:
    tail = request.match_info.get("tail", "")
    path = asset_path(service(request).catalog.assets_dir, tail)
    if path is None:
        return not_found(request, f"no asset {tail[:200]!r}")
    verdict = judge_range(request.headers.get(hdrs.RANGE))
    if verdict is RangeVerdict.UNSATISFIABLE:
        return web.Response(
            status=416, headers={hdrs.CONTENT_RANGE: f"bytes */{path.stat().st_size}"}
        )
    response = web.FileResponse(path, chunk_size=CHUNK)
    if verdict is RangeVerdict.IGNORE:  # answer as if the header were absent
        headers = request.headers.copy()
        del headers[hdrs.RANGE]
        await response.prepare(request.clone(headers=headers))
    return response
