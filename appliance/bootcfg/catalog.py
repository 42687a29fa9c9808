"""The data directory: matchbox groups, profiles, Ignition and generic files.

Layout (matchbox's)::

    DATA/groups/*.json      {"id", "name", "profile", "selector": {..}, "metadata": {..}}
    DATA/profiles/*.json    {"id", "name", "boot": {"kernel", "initrd": [..], "args": [..]},
                             "ignition_id", "generic_id"}
    DATA/ignition/NAME      *.ign / *.ignition / *.json: plain Ignition, served as parsed
                            *.j2 (e.g. install.ign.j2): a kpc Jinja2 template
    DATA/generic/NAME       served as is, or rendered with Jinja2 when it ends in .j2
    DATA/assets/...         files served under /assets/

Loading is all or nothing: a broken group or profile makes ``load_catalog`` raise one
ConfigError listing every problem with its file, and the service keeps what it had.
Template files that kpc cannot serve (matchbox Go templates, Container Linux Config YAML)
do not stop the load; they are recorded as refused with the reason, logged, and a request
that needs one gets an error naming the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliance.bootcfg.labels import normalize_selector
from appliance.errors import ConfigError

SUBDIRS = ("groups", "profiles", "ignition", "generic")
MAX_FILE_BYTES = 4 * 1024 * 1024
# A matchbox (Go text/template) action: {{.Field}}, {{ if ...}}, {{range ..}}, {{end}}, ...
_GO_TEMPLATE_RE = re.compile(
    r"\{\{-?\s*(?:\.[A-Za-z_]|\$|if\s|else\b|end\b|range\s|with\s|template\s|define\s|"
    r"block\s|index\s|printf\s|/\*)"
)
# Characters that would let a profile field start a new iPXE command.
_IPXE_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_FILE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


class TemplateKind(StrEnum):
    IGNITION = "ignition"  # plain Ignition JSON, served as parsed
    IGNITION_J2 = "ignition-j2"  # Jinja2 rendering to Ignition
    TEXT = "text"  # a generic file served as is
    TEXT_J2 = "text-j2"  # a generic Jinja2 template
    REFUSED = "refused"


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    kind: TemplateKind
    text: str = ""
    parsed: Mapping[str, Any] | None = None  # plain Ignition
    problem: str | None = None  # why it was refused


@dataclass(frozen=True)
class Boot:
    kernel: str
    initrd: tuple[str, ...] = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    id: str
    source: Path
    name: str = ""
    boot: Boot | None = None
    ignition_id: str | None = None
    generic_id: str | None = None


@dataclass(frozen=True)
class Group:
    id: str
    source: Path
    profile: str
    name: str = ""
    selector: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    data_dir: Path
    groups: tuple[Group, ...] = ()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    ignition: Mapping[str, Template] = field(default_factory=dict)
    generic: Mapping[str, Template] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"


def looks_like_go_template(text: str) -> bool:
    return _GO_TEMPLATE_RE.search(text) is not None


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            problems.append(f"{path}: larger than {MAX_FILE_BYTES} bytes")
            return None
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problems.append(f"{path}: not UTF-8 text")
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
    return None


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    text = _read_text(path, problems)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object")
        return None
    return data


def _string(data: Mapping[str, Any], key: str, path: Path, problems: list[str]) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(f"{path}: {key}: expected a string")
        return None
    return value


def _boot(data: Mapping[str, Any], path: Path, problems: list[str]) -> Boot | None:
    raw = data.get("boot")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"{path}: boot: expected an object")
        return None
    kernel = raw.get("kernel")
    if not isinstance(kernel, str) or not kernel:
        problems.append(f"{path}: boot.kernel: required (the kernel URL)")
        return None
    initrd = raw.get("initrd") or []
    args = raw.get("args")
    if args is None and isinstance(raw.get("cmdline"), dict):
        # matchbox's older profile shape: {"cmdline": {"key": "value", "flag": ""}}
        args = [f"{k}={v}" if v != "" else str(k) for k, v in raw["cmdline"].items()]
    args = args or []
    ok = True
    for name, values in (("initrd", initrd), ("args", args)):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(f"{path}: boot.{name}: expected a list of strings")
            ok = False
    if not ok:
        return None
    for name, value in [("kernel", kernel), *(("initrd", v) for v in initrd)]:
        if _IPXE_UNSAFE.search(value) or " " in value.strip():
            problems.append(f"{path}: boot.{name}: {value!r} contains spaces or control chars")
            ok = False
    for value in args:
        if _IPXE_UNSAFE.search(value):
            problems.append(f"{path}: boot.args: {value!r} contains control characters")
            ok = False
    return Boot(kernel.strip(), tuple(v.strip() for v in initrd), tuple(args)) if ok else None


def _load_profile(path: Path, problems: list[str]) -> Profile | None:
    data = _read_json(path, problems)
    if data is None:
        return None
    before = len(problems)
    pid = _string(data, "id", path, problems)
    if pid is None:
        problems.append(f"{path}: id: required")
    elif not _ID_RE.fullmatch(pid):
        problems.append(f"{path}: id: {pid!r} is not a simple name")
    boot = _boot(data, path, problems)
    ignition_id = _string(data, "ignition_id", path, problems)
    generic_id = _string(data, "generic_id", path, problems)
    for key, value in (("ignition_id", ignition_id), ("generic_id", generic_id)):
        if value is not None and not _FILE_ID_RE.fullmatch(value):
            problems.append(f"{path}: {key}: {value!r} must be a file name in the data dir")
    if len(problems) > before or pid is None:
        return None
    return Profile(
        id=pid,
        source=path,
        name=_string(data, "name", path, problems) or "",
        boot=boot,
        ignition_id=ignition_id,
        generic_id=generic_id,
    )


def _load_group(path: Path, problems: list[str]) -> Group | None:
    data = _read_json(path, problems)
    if data is None:
        return None
    before = len(problems)
    gid = _string(data, "id", path, problems)
    if gid is None:
        problems.append(f"{path}: id: required")
    profile = _string(data, "profile", path, problems)
    if profile is None:
        problems.append(f"{path}: profile: required (the id of a profile)")
    selector_raw = data.get("selector") or {}
    metadata = data.get("metadata") or {}
    selector: dict[str, str] = {}
    if not isinstance(selector_raw, dict):
        problems.append(f"{path}: selector: expected an object of label: value")
    else:
        for key, value in selector_raw.items():
            if not isinstance(value, str) or not value:
                problems.append(f"{path}: selector.{key}: expected a non-empty string")
                continue
            try:
                selector[str(key)] = normalize_selector(str(key), value)
            except ValueError as exc:
                problems.append(f"{path}: selector.{key}: {exc}")
    if not isinstance(metadata, dict):
        problems.append(f"{path}: metadata: expected an object")
    if len(problems) > before or gid is None or profile is None:
        return None
    return Group(
        id=gid,
        source=path,
        profile=profile,
        name=_string(data, "name", path, problems) or "",
        selector=selector,
        metadata=metadata,
    )


def load_template(path: Path, *, generic: bool) -> Template:
    """Classify one Ignition (or generic) file; never raises for its content."""
    name = path.name
    problems: list[str] = []
    text = _read_text(path, problems)
    if text is None:
        return Template(name, path, TemplateKind.REFUSED, problem=problems[0])
    if name.endswith(".j2"):
        if looks_like_go_template(text):
            return Template(
                name,
                path,
                TemplateKind.REFUSED,
                problem=f"{path}: uses matchbox Go template syntax ({{{{.Field}}}}) in a Jinja2 "
                "file; write {{ field }} instead",
            )
        kind = TemplateKind.TEXT_J2 if generic else TemplateKind.IGNITION_J2
        return Template(name, path, kind, text=text)
    if generic:
        if looks_like_go_template(text):
            return Template(
                name,
                path,
                TemplateKind.REFUSED,
                problem=f"{path}: a matchbox Go template; kpc renders Jinja2: rename it to "
                f"{name}.j2 and write {{{{ field }}}} instead of {{{{.field}}}}",
            )
        return Template(name, path, TemplateKind.TEXT, text=text)
    if name.endswith((".ign", ".ignition", ".json")):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = (
                "; it looks like a matchbox Go template: kpc serves .ign files as plain JSON "
                "and renders Jinja2 .ign.j2 templates"
                if looks_like_go_template(text)
                else ""
            )
            return Template(
                name,
                path,
                TemplateKind.REFUSED,
                problem=f"{path}:{exc.lineno}: not valid Ignition JSON: {exc.msg}{hint}",
            )
        if not isinstance(parsed, dict) or not isinstance(parsed.get("ignition"), dict):
            return Template(
                name,
                path,
                TemplateKind.REFUSED,
                problem=f"{path}: not an Ignition config (no top-level 'ignition' object)",
            )
        return Template(name, path, TemplateKind.IGNITION, text=text, parsed=parsed)
    if looks_like_go_template(text):
        problem = (
            f"{path}: a matchbox Go template; kpc does not run Go templates: write the config "
            "as Jinja2 Ignition JSON (NAME.ign.j2), or transpile it with butane and serve the "
            ".ign"
        )
    else:
        problem = (
            f"{path}: Container Linux Config / Butane YAML is not served; transpile it to "
            "Ignition JSON with butane and save it as .ign"
        )
    return Template(name, path, TemplateKind.REFUSED, problem=problem)


def _files(directory: Path, pattern: str) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(pattern) if p.is_file() and not p.name.startswith("."))


def load_catalog(data_dir: Path) -> Catalog:
    """Read and check the whole data directory, or raise ConfigError listing every problem."""
    if not data_dir.is_dir():
        raise ConfigError(
            f"bootcfg data directory {data_dir} does not exist",
            hint="create it with 'kpc bootcfg init', or set bootcfg.data_dir",
        )
    problems: list[str] = []
    warnings: list[str] = []

    profiles: dict[str, Profile] = {}
    for path in _files(data_dir / "profiles", "*.json"):
        profile = _load_profile(path, problems)
        if profile is None:
            continue
        if profile.id in profiles:
            other = profiles[profile.id].source
            problems.append(f"{path}: profile id {profile.id!r} is also used by {other}")
            continue
        profiles[profile.id] = profile

    groups: dict[str, Group] = {}
    default: Group | None = None
    for path in _files(data_dir / "groups", "*.json"):
        group = _load_group(path, problems)
        if group is None:
            continue
        if group.id in groups:
            other = groups[group.id].source
            problems.append(f"{path}: group id {group.id!r} is also used by {other}")
            continue
        if group.profile not in profiles:
            problems.append(
                f"{path}: profile {group.profile!r} does not exist in {data_dir / 'profiles'}"
            )
            continue
        if not group.selector:
            if default is not None:
                problems.append(
                    f"{path}: a second default group (no selector); {default.source} is one "
                    "already: give one of them a selector"
                )
                continue
            default = group
        groups[group.id] = group

    ignition = {p.name: load_template(p, generic=False) for p in _files(data_dir / "ignition", "*")}
    generic = {p.name: load_template(p, generic=True) for p in _files(data_dir / "generic", "*")}
    for template in [*ignition.values(), *generic.values()]:
        if template.problem:
            warnings.append(f"refused: {template.problem}")
    for profile in profiles.values():
        if profile.ignition_id and profile.ignition_id not in ignition:
            warnings.append(
                f"{profile.source}: ignition_id {profile.ignition_id!r} is not in "
                f"{data_dir / 'ignition'}"
            )
        if profile.generic_id and profile.generic_id not in generic:
            warnings.append(
                f"{profile.source}: generic_id {profile.generic_id!r} is not in "
                f"{data_dir / 'generic'}"
            )

    if problems:
        count = len(problems)
        raise ConfigError(
            f"{data_dir}: {count} problem{'s' if count != 1 else ''} in the bootcfg data",
            hint="fix the files named above; the service keeps serving what it loaded before",
            problems=problems,
        )
    return Catalog(
        data_dir=data_dir,
        groups=tuple(sorted(groups.values(), key=lambda g: g.id)),
        profiles=profiles,
        ignition=ignition,
        generic=generic,
        warnings=tuple(warnings),
    )


def signature(data_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when an operator edits the data dir (names, sizes, mtimes)."""
    entries: list[tuple[str, int, int]] = []
    for sub in SUBDIRS:
        for path in _files(data_dir / sub, "*"):
            try:
                info = path.stat()
            except OSError:
                continue
            entries.append((f"{sub}/{path.name}", info.st_size, info.st_mtime_ns))
    return tuple(entries)
