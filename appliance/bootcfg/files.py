"""``/assets/...``: kernels, initrds and disk images, streamed with sendfile.

aiohttp's FileResponse answers HEAD, single ``Range`` requests (206 with Content-Range,
416 when unsatisfiable), conditional requests, and sends the file with ``sendfile(2)``:
never read into memory. The path is checked before any file is opened: no ``..``, no
hidden names (downloads in progress are ``.name.part``), nothing that resolves outside the
assets directory (a symlink inside the tree may point elsewhere inside it).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from appliance.bootcfg.common import not_found, service

CHUNK = 256 * 1024


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
    return web.FileResponse(path, chunk_size=CHUNK)
