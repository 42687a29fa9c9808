"""Where kpc's own files live: Ignition templates, container definitions, Kolla defaults.

On an installed deploy host they are under ``paths.source_dir`` (``/etc/kpc``, copied there by
install-host); in a development checkout they are beside the package.
"""

from __future__ import annotations

from pathlib import Path

from appliance.errors import ConfigError

CHECKOUT = Path(__file__).resolve().parent.parent
KINDS = ("ignition", "containers", "kolla", "compose")


def resource_dir(kind: str, source_dir: Path | None = None) -> Path:
    """The directory holding ``kind`` files: ``source_dir/kind`` if present, else the checkout's."""
    if kind not in KINDS:
        raise ValueError(f"unknown resource kind {kind!r}")
    candidates = [source_dir / kind] if source_dir is not None else []
    candidates.append(CHECKOUT / kind)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"cannot find kpc's {kind} files (looked in {looked})",
        hint="set paths.source_dir in the site config to the directory that holds them",
    )
