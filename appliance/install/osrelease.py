"""Which OS the live host runs: flavor, release channel and version, read from a root tree.

Pure apart from reading files under the ``root`` it is given (``/`` on a real host, a fixture
tree in tests). Where each value came from is kept, so the operator can see why kpc chose it.

Flatcar:
  /usr/share/flatcar/release      FLATCAR_RELEASE_VERSION=3815.2.0
  /usr/share/flatcar/update.conf  GROUP=stable          (the image's channel)
  /etc/flatcar/update.conf        GROUP=beta            (the operator's override: wins)
  /etc/os-release                 ID=flatcar VERSION_ID=3815.2.0   (fallback for the version)
Legacy CoreOS Container Linux: the same with ``coreos`` and COREOS_RELEASE_VERSION.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from appliance.config import Os
from appliance.errors import ConfigError

CHANNELS = ("stable", "beta", "alpha", "lts")
MAX_SYMLINKS = 16


@dataclass(frozen=True)
class Sourced:
    """A value and the file (relative to the root) it was read from."""

    value: str
    source: str


@dataclass(frozen=True)
class OsRelease:
    """What the host says about itself; any part may be unknown (None)."""

    flavor: Sourced | None
    version: Sourced | None
    channel: Sourced | None
    pretty_name: str | None = None

    def describe(self) -> str:
        name = self.pretty_name or (self.flavor.value if self.flavor else "an unknown OS")
        parts = [name]
        if self.version:
            parts.append(f"version {self.version.value}")
        if self.channel:
            parts.append(f"channel {self.channel.value}")
        return ", ".join(parts)


@dataclass(frozen=True)
class TargetOs:
    """What will be installed: flavor, channel, version, optional mirror, and why."""

    flavor: str
    channel: str
    version: str
    baseurl: str | None
    reasons: tuple[str, ...]


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines as in os-release and update.conf (quotes allowed, # comments)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        value = value.strip()
        if value[:1] in {'"', "'"}:
            try:
                words = shlex.split(value)
            except ValueError:
                words = [value.strip("\"'")]
            value = words[0] if words else ""
        values[key] = value
    return values


def _resolve(root: Path, rel: str) -> Path | None:
    """``rel`` inside ``root``, following symlinks as if ``root`` were ``/``."""
    parts = list(PurePosixPath(rel).parts)
    current = PurePosixPath("/")
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in {"/", "."}:
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        host = root / candidate.relative_to("/")
        if host.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                return None
            target = PurePosixPath(str(host.readlink()))
            base = PurePosixPath("/") if target.is_absolute() else current
            parts = list((base / target).parts) + parts
            current = PurePosixPath("/")
            continue
        current = candidate
    path = root / current.relative_to("/")
    return path if path.is_file() else None


def _read_env(root: Path, rel: str) -> dict[str, str] | None:
    path = _resolve(root, rel)
    if path is None:
        return None
    try:
        return parse_env_file(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def _first(root: Path, candidates: list[tuple[str, str]]) -> Sourced | None:
    """The first ``(file, key)`` that has a non-empty value."""
    for rel, key in candidates:
        values = _read_env(root, rel)
        if values and values.get(key):
            return Sourced(values[key], f"{rel} ({key})")
    return None


def detect_os(root: Path) -> OsRelease:
    """Read flavor, version and channel of the OS installed under ``root``."""
    os_release = _read_env(root, "/etc/os-release") or _read_env(root, "/usr/lib/os-release")
    os_release_file = (
        "/etc/os-release" if _resolve(root, "/etc/os-release") else "/usr/lib/os-release"
    )
    os_id = (os_release or {}).get("ID", "")
    pretty = (os_release or {}).get("PRETTY_NAME") or None

    flavor: Sourced | None = None
    for name in ("flatcar", "coreos"):
        if _resolve(root, f"/usr/share/{name}/release") is not None:
            flavor = Sourced(name, f"/usr/share/{name}/release")
            break
    if flavor is None and os_id in {"flatcar", "coreos"}:
        flavor = Sourced(os_id, f"{os_release_file} (ID)")
    if flavor is None:
        return OsRelease(None, None, None, pretty)

    name = flavor.value
    upper = name.upper()
    version = _first(
        root,
        [
            (f"/usr/share/{name}/release", f"{upper}_RELEASE_VERSION"),
            (os_release_file, "VERSION_ID"),
            (os_release_file, "VERSION"),
        ],
    )
    channel = _first(
        root,
        [
            (f"/etc/{name}/update.conf", "GROUP"),
            (f"/usr/share/{name}/update.conf", "GROUP"),
        ],
    )
    return OsRelease(flavor, version, channel, pretty)


def resolve_target(detected: OsRelease, wanted: Os) -> TargetOs:
    """Combine what the host runs with the site config's ``os`` section.

    A value set in the config wins; ``version: host`` (the default) and an unset channel mean
    "the same as this host". Raises ConfigError when neither says what to install.
    """
    reasons: list[str] = []
    explicit = wanted.model_fields_set

    channel: str
    if "channel" in explicit:
        channel = wanted.channel
        reasons.append(f"channel {channel}: from the site config (os.channel)")
    elif detected.channel is not None:
        channel = detected.channel.value
        if channel not in CHANNELS:
            raise ConfigError(
                f"this host follows update group {channel!r} "
                f"(from {detected.channel.source}), which is not a Flatcar release channel",
                hint=f"set os.channel in the site config to one of: {', '.join(CHANNELS)}",
            )
        reasons.append(f"channel {channel}: from {detected.channel.source}")
    else:
        raise ConfigError(
            f"cannot tell which release channel this host follows ({detected.describe()})",
            hint=f"set os.channel in the site config to one of: {', '.join(CHANNELS)}",
        )

    if wanted.version != "host":
        version = wanted.version
        reasons.append(f"version {version}: from the site config (os.version)")
    elif detected.version is not None:
        version = detected.version.value
        reasons.append(f"version {version}: from {detected.version.source}")
    else:
        raise ConfigError(
            f"cannot tell which version this host runs ({detected.describe()})",
            hint="set os.version in the site config (e.g. 3815.2.0, or 'current')",
        )

    flavor = wanted.flavor
    if detected.flavor is not None and detected.flavor.value != flavor:
        reasons.append(
            f"this host runs {detected.flavor.value}; installing {flavor} of the same version"
        )
    baseurl = wanted.mirror.replace("{channel}", channel) if "mirror" in explicit else None
    if baseurl:
        reasons.append(f"image mirror {baseurl}: from the site config (os.mirror)")
    return TargetOs(flavor, channel, version, baseurl, tuple(reasons))
