"""The data directory: matchbox groups, profiles, Ignition and generic files.

Layout (matchbox's)::

    DATA/groups/*.json      {"id", "name", "profile", "selector": {..}, "metadata": {..}}
    DATA/profiles/ID.json   {"id", "name", "boot": {"kernel", "initrd": [..], "args": [..]},
                             "ignition_id", "generic_id"}; a group's "profile" names the
                            file (ID.json), as in matchbox
    DATA/ignition/NAME      *.ign / *.ignition: Ignition JSON (a Go template if it has {{ }})
                            *.j2: a kpc Jinja2 template rendering Ignition JSON
                            anything else: a matchbox Go template; Ignition JSON is served,
                            Butane YAML is refused (no transpiler here)
    DATA/generic/NAME       a matchbox Go template (a kpc Jinja2 template if it ends .j2)
    DATA/assets/...         files served under /assets/
    (ignition and generic names may include subdirectories: "ignition_id": "site/a.ign")

Loading is lenient the way matchbox is and strict about what kpc serves: each file is
checked on its own, a broken one is left out of service and reported in
``Catalog.problems`` (file and what is wrong), and the rest serves. Only a missing data
directory raises. A group that names a missing or broken profile still takes part in
matching (so its machines get a 404, never another group's profile), as in matchbox.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from appliance.bootcfg.gotemplate import GoTemplate, GoTemplateError, has_actions, parse
from appliance.bootcfg.labels import LabelError, normalize_selector, validate_label
from appliance.errors import ConfigError
from appliance.inputfile import read_text

SUBDIRS = ("groups", "profiles", "ignition", "generic")
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_FILES = 10000
# Ignition spec versions a matchbox-era config may carry (matchbox parses 3.0 to 3.4).
_IGNITION_VERSION_RE = re.compile(r"^3\.[0-4]\.0(?:-experimental)?$")
# Characters that would let a profile field start a new iPXE command.
_IPXE_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@+-]{0,127}$")
_GO_IN_JINJA_RE = re.compile(r"\{\{-?\s*(?:\.[A-Za-z_]|\$|end\b|else\b|range\s|if\s)")
_BUTANE_RE = re.compile(r"^\s*variant\s*:", re.MULTILINE)

BUTANE_HINT = (
    "kpc cannot transpile Butane / Container Linux Config YAML (no butane here): run "
    "'butane --strict --files-dir DATA/ignition FILE > NAME.ign' on a machine that has "
    "butane (or 'docker run --rm -i quay.io/coreos/butane --strict < FILE'), put NAME.ign "
    "in DATA/ignition and set the profile's ignition_id to it"
)


class TemplateKind(StrEnum):
    IGNITION = "ignition"  # plain Ignition JSON, served as parsed
    IGNITION_GO = "ignition-go"  # a matchbox Go template rendering Ignition JSON
    IGNITION_J2 = "ignition-j2"  # Jinja2 rendering to Ignition
    TEXT_GO = "text-go"  # a generic matchbox Go template (plain text renders as itself)
    TEXT_J2 = "text-j2"  # a generic Jinja2 template
    REFUSED = "refused"


@dataclass(frozen=True)
class Template:
    name: str
    path: Path
    kind: TemplateKind
    text: str = ""
    parsed: Mapping[str, Any] | None = None  # plain Ignition
    go: GoTemplate | None = None  # matchbox Go templates, parsed once
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

    @property
    def key(self) -> str:
        """What groups call it: the file name without .json (matchbox reads ID.json)."""
        return self.source.name.removesuffix(".json")


@dataclass(frozen=True)
class Group:
    id: str
    source: Path
    profile: str
    name: str = ""
    selector: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def selector_string(self) -> str:
        """matchbox's ordering key for groups with as many selectors: sorted key=value."""
        return ",".join(sorted(f"{k}={v}" for k, v in self.selector.items()))


@dataclass(frozen=True)
class Catalog:
    """The loaded data. ``groups`` are in matchbox's match order (first match wins)."""

    data_dir: Path
    groups: tuple[Group, ...] = ()
    profiles: Mapping[str, Profile] = field(default_factory=dict)  # by file key
    ignition: Mapping[str, Template] = field(default_factory=dict)
    generic: Mapping[str, Template] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # broken files, each out of service: "path: what"
    warnings: tuple[str, ...] = ()  # served, but worth knowing
    broken: tuple[Path, ...] = ()  # the files ``problems`` are about

    def health(self) -> str | None:
        """A line for /healthz when files are out of service: how many, by name only (the
        details stay in the log and 'kpc bootcfg check', not with any client)."""
        if not self.broken:
            return None
        names = ", ".join(p.relative_to(self.data_dir).as_posix() for p in self.broken[:20])
        more = f" and {len(self.broken) - 20} more" if len(self.broken) > 20 else ""
        return (
            f"data: {len(self.broken)} broken file(s) out of service ({names}{more}); "
            "see 'kpc bootcfg check'"
        )

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"


def match_order(groups: list[Group]) -> tuple[Group, ...]:
    """matchbox's order: most selectors first; among as many, the greatest
    ``selector_string`` first; identical selectors in file-name order."""
    ordered = sorted(groups, key=lambda g: g.source.name)
    ordered.sort(key=lambda g: g.selector_string, reverse=True)
    ordered.sort(key=lambda g: len(g.selector), reverse=True)
    return tuple(ordered)


def _read_text(path: Path, problems: list[str]) -> str | None:
    """The file's text, or None and a problem (a FIFO or device is refused unread)."""
    try:
        return read_text(path, what="bootcfg data file", limit=MAX_FILE_BYTES)
    except FileNotFoundError:
        problems.append(f"{path}: cannot read: no such file")
    except ConfigError as exc:
        problems.append(exc.message)
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
    except RecursionError:
        problems.append(f"{path}: JSON nested too deeply")
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
    if _IPXE_UNSAFE.search(kernel) or " " in kernel.strip():
        problems.append(f"{path}: boot.kernel: {kernel!r} contains spaces or control chars")
        ok = False
    for value in initrd:
        # iPXE options before the URL are allowed: "--name main /assets/initrd.img"
        if _IPXE_UNSAFE.search(value) or not value.strip():
            problems.append(f"{path}: boot.initrd: {value!r} is empty or has control chars")
            ok = False
    for value in args:
        if _IPXE_UNSAFE.search(value):
            problems.append(f"{path}: boot.args: {value!r} contains control characters")
            ok = False
    return Boot(kernel.strip(), tuple(v.strip() for v in initrd), tuple(args)) if ok else None


def valid_file_id(value: str) -> bool:
    """A name under ignition/ or generic/: simple names, optionally in subdirectories."""
    parts = value.split("/")
    return len(value) <= 512 and all(_NAME_RE.fullmatch(p) for p in parts)


def _load_profile(path: Path, problems: list[str], warnings: list[str]) -> Profile | None:
    data = _read_json(path, problems)
    if data is None:
        return None
    before = len(problems)
    pid = _string(data, "id", path, problems)
    if pid is None:
        problems.append(f"{path}: id: required (matchbox refuses a profile without one too)")
    elif pid != path.name.removesuffix(".json"):
        warnings.append(
            f"{path}: id {pid!r} differs from the file name; groups find this profile as "
            f"{path.name.removesuffix('.json')!r} (matchbox reads profiles/ID.json)"
        )
    boot = _boot(data, path, problems)
    ignition_id = _string(data, "ignition_id", path, problems)
    generic_id = _string(data, "generic_id", path, problems)
    for key, value in (("ignition_id", ignition_id), ("generic_id", generic_id)):
        if value is not None and not valid_file_id(value):
            problems.append(
                f"{path}: {key}: {value!r} must be a file name (or sub/dir/name) in the data dir"
            )
    if len(problems) > before or pid is None:
        return None
    return Profile(
        id=pid,
        source=path,
        name=str(data.get("name") or ""),
        boot=boot,
        ignition_id=ignition_id,
        generic_id=generic_id,
    )


def _load_group(path: Path, problems: list[str], warnings: list[str]) -> Group | None:
    data = _read_json(path, problems)
    if data is None:
        return None
    before = len(problems)
    gid = _string(data, "id", path, problems) or path.name.removesuffix(".json")
    profile = _string(data, "profile", path, problems) or ""
    selector_raw = data.get("selector") or {}
    metadata = data.get("metadata") or {}
    selector: dict[str, str] = {}
    if not isinstance(selector_raw, dict):
        problems.append(f"{path}: selector: expected an object of label: value")
    else:
        for key, value in selector_raw.items():
            if not isinstance(value, str):
                problems.append(f"{path}: selector.{key}: expected a string")
                continue
            try:
                selector[str(key)] = normalize_selector(str(key), value)
            except ValueError as exc:
                problems.append(f"{path}: selector.{key}: {exc}")
                continue
            try:
                if value:
                    validate_label(str(key), value)
            except LabelError as exc:
                warnings.append(
                    f"{path}: selector.{key}: no request can match it: kpc refuses such a "
                    f"label ({exc})"
                )
    if not isinstance(metadata, dict):
        problems.append(f"{path}: metadata: expected an object")
    if len(problems) > before:
        return None
    return Group(
        id=gid,
        source=path,
        profile=profile,
        name=str(data.get("name") or ""),
        selector=selector,
        metadata=metadata,
    )


def _refused(name: str, path: Path, problem: str) -> Template:
    return Template(name, path, TemplateKind.REFUSED, problem=problem)


def _go(name: str, path: Path, text: str, kind: TemplateKind) -> Template:
    try:
        go = parse(text, str(path))
    except GoTemplateError as exc:
        return _refused(name, path, f"{exc} (a matchbox Go template)")
    return Template(name, path, kind, text=text, go=go)


def check_ignition_json(config: Any) -> str | None:
    """Why ``config`` is not an Ignition 3.x config kpc can serve, or None."""
    if not isinstance(config, dict) or not isinstance(config.get("ignition"), dict):
        return "not an Ignition config (no top-level 'ignition' object)"
    version = config["ignition"].get("version")
    if not isinstance(version, str) or not _IGNITION_VERSION_RE.fullmatch(version):
        return f"ignition.version {version!r} is not an Ignition 3.0-3.4 spec version"
    return None


def load_template(path: Path, *, generic: bool, name: str | None = None) -> Template:
    """Classify one Ignition (or generic) file; never raises for its content."""
    name = name or path.name
    problems: list[str] = []
    text = _read_text(path, problems)
    if text is None:
        return _refused(name, path, problems[0])
    if name.endswith(".j2"):
        if _GO_IN_JINJA_RE.search(text):
            return _refused(
                name,
                path,
                f"{path}: uses matchbox Go template syntax ({{{{.field}}}}) in a Jinja2 file: "
                f"drop the .j2 suffix to have it rendered as a matchbox template, or write "
                "{{ field }}",
            )
        kind = TemplateKind.TEXT_J2 if generic else TemplateKind.IGNITION_J2
        return Template(name, path, kind, text=text)
    if generic:
        return _go(name, path, text, TemplateKind.TEXT_GO)
    if name.endswith((".ign", ".ignition")) and not has_actions(text):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            return _refused(name, path, f"{path}:{exc.lineno}: not valid Ignition JSON: {exc.msg}")
        except RecursionError:
            return _refused(name, path, f"{path}: JSON nested too deeply")
        problem = check_ignition_json(parsed)
        if problem:
            return _refused(name, path, f"{path}: {problem}")
        return Template(name, path, TemplateKind.IGNITION, text=text, parsed=parsed)
    if _BUTANE_RE.search(text) and not text.lstrip().startswith(("{", "[")):
        return _refused(name, path, f"{path}: a Butane config: {BUTANE_HINT}")
    if not text.lstrip().startswith("{") and not text.lstrip().startswith("{{"):
        return _refused(
            name, path, f"{path}: neither Ignition JSON nor a template of it (YAML?): {BUTANE_HINT}"
        )
    return _go(name, path, text, TemplateKind.IGNITION_GO)


def _files(directory: Path, pattern: str) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(pattern) if p.is_file() and not p.name.startswith("."))


def _tree(directory: Path) -> dict[str, Path]:
    """Every file under ``directory`` by its relative name (a/b.ign), hidden ones skipped."""
    found: dict[str, Path] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or not path.is_file():
            continue
        if not valid_file_id(rel):
            continue
        found[rel] = path
        if len(found) >= MAX_FILES:
            break
    return found


def _ignored(directory: Path, warnings: list[str]) -> None:
    """matchbox reads only NAME.json in groups/ and profiles/: say what it skips."""
    if not directory.is_dir():
        return
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or (entry.is_file() and entry.name.endswith(".json")):
            continue
        what = "directory" if entry.is_dir() else "file"
        warnings.append(f"{entry}: ignored {what} (only *.json directly in {directory.name}/)")


def load_catalog(data_dir: Path) -> Catalog:
    """Read and check the data directory. Broken files are reported in ``problems`` and
    left out; only a missing data directory raises ConfigError."""
    if not data_dir.is_dir():
        raise ConfigError(
            f"bootcfg data directory {data_dir} does not exist",
            hint="create it with 'kpc bootcfg init', or set bootcfg.data_dir",
        )
    problems: list[str] = []
    warnings: list[str] = []

    broken: list[Path] = []
    profiles: dict[str, Profile] = {}
    for path in _files(data_dir / "profiles", "*.json"):
        before = len(problems)
        profile = _load_profile(path, problems, warnings)
        if profile is not None:
            profiles[profile.key] = profile
        if len(problems) > before:
            broken.append(path)
    _ignored(data_dir / "profiles", warnings)

    groups: list[Group] = []
    broken_profiles = {
        p.name.removesuffix(".json") for p in _files(data_dir / "profiles", "*.json")
    }
    for path in _files(data_dir / "groups", "*.json"):
        before = len(problems)
        group = _load_group(path, problems, warnings)
        if len(problems) > before:
            broken.append(path)
        if group is None:
            continue
        if not group.profile:
            problems.append(f"{path}: profile: required (the name of a profile in profiles/)")
        elif group.profile not in profiles:
            why = "is broken (see above)" if group.profile in broken_profiles else "does not exist"
            problems.append(
                f"{path}: profile {group.profile!r} {why}: machines matching this group get 404"
            )
        if not group.profile or group.profile not in profiles:
            broken.append(path)
        groups.append(group)
    _ignored(data_dir / "groups", warnings)
    defaults = [g for g in groups if not g.selector]
    if len(defaults) > 1:
        first = sorted(defaults, key=lambda g: g.source.name)[0]
        warnings.append(
            f"{len(defaults)} default groups (no selector): {first.source} wins (first by file "
            "name); matchbox calls this non-deterministic: keep one"
        )
    ids: dict[str, Path] = {}
    for group in groups:
        if group.id in ids:
            warnings.append(
                f"{group.source}: group id {group.id!r} is also used by {ids[group.id]}"
            )
        ids.setdefault(group.id, group.source)

    ignition = {
        name: load_template(path, generic=False, name=name)
        for name, path in _tree(data_dir / "ignition").items()
    }
    generic = {
        name: load_template(path, generic=True, name=name)
        for name, path in _tree(data_dir / "generic").items()
    }
    used = {p.ignition_id for p in profiles.values()} | {p.generic_id for p in profiles.values()}
    for template in [*ignition.values(), *generic.values()]:
        if not template.problem:
            continue
        if template.name in used:
            problems.append(template.problem)
            broken.append(template.path)
        else:  # e.g. a Butane source kept beside the .ign it was transpiled to
            warnings.append(f"not served (no profile uses it): {template.problem}")
    for profile in profiles.values():
        if profile.ignition_id and profile.ignition_id not in ignition:
            warnings.append(
                f"{profile.source}: ignition_id {profile.ignition_id!r} is not in "
                f"{data_dir / 'ignition'} (/ignition answers 404)"
            )
        if profile.generic_id and profile.generic_id not in generic:
            warnings.append(
                f"{profile.source}: generic_id {profile.generic_id!r} is not in "
                f"{data_dir / 'generic'} (/generic answers 404)"
            )
    return Catalog(
        data_dir=data_dir,
        groups=match_order(groups),
        profiles=profiles,
        ignition=ignition,
        generic=generic,
        problems=tuple(problems),
        warnings=tuple(warnings),
        broken=tuple(dict.fromkeys(broken)),
    )


def signature(data_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when an operator edits the data dir (names, sizes, mtimes)."""
    entries: list[tuple[str, int, int]] = []
    for sub in SUBDIRS:
        base = data_dir / sub
        paths = _tree(base).values() if sub in ("ignition", "generic") else _files(base, "*")
        for path in paths:
            try:
                info = path.stat()
            except OSError:
                continue
            entries.append((f"{sub}/{path.relative_to(base)}", info.st_size, info.st_mtime_ns))
    return tuple(entries)
