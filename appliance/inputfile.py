"""Reading the files an operator hands kpc (site config, secret files, SSH keys, templates,
kolla's YAML): a regular file, of bounded size, UTF-8 text, and YAML of bounded depth and
expanded size. Anything else is one ConfigError naming the file and what to do, never a
traceback and never a hang (a FIFO or /dev/zero is refused before it is read).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from appliance.errors import ConfigError

KIB = 1024
MIB = 1024 * KIB
MAX_KEYS_BYTES = 1 * MIB  # an authorized_keys file of thousands of keys
MAX_TEMPLATE_BYTES = 1 * MIB
MAX_STATE_BYTES = 16 * MIB  # kpc's own JSON records (lab state, VM specs, manifests)
MAX_YAML_DEPTH = 64  # nesting levels; a site config uses 4
MAX_YAML_NODES = 200_000  # values after aliases are expanded (an alias bomb has billions)

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _size(count: int) -> str:
    return f"{count / MIB:.1f} MiB" if count >= MIB else f"{count / KIB:.0f} KiB"


def read_text(path: Path, *, what: str, limit: int, lenient: bool = False) -> str:
    """The UTF-8 text of the regular file ``path`` (at most ``limit`` bytes). ``lenient``
    replaces bytes that are not UTF-8 instead of refusing the file.

    FileNotFoundError passes through (callers say what a missing file means); every other
    problem is a ConfigError whose message starts with the file and says what ``what`` (e.g.
    "site config") must be.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the {what}: {exc.strerror}",
            hint="check the path and its permissions",
        ) from None
    try:
        info = os.fstat(fd)
        kind = _KINDS.get(stat.S_IFMT(info.st_mode))
        if kind is not None:
            raise ConfigError(
                f"{path}: is {kind}, not a file; the {what} must be a regular file",
                hint="give the path of the file itself",
            )
        if info.st_size > limit:
            raise ConfigError(
                f"{path}: is {_size(info.st_size)}; a {what} is at most {_size(limit)}",
                hint=f"is this the right file? a {what} is small text",
            )
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(64 * KIB, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise ConfigError(
            f"{path}: is more than {_size(limit)}; a {what} is at most {_size(limit)}",
            hint=f"is this the right file? a {what} is small text",
        )
    try:
        return data.decode("utf-8", errors="replace" if lenient else "strict")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}: the {what} is not UTF-8 text "
            f"(byte 0x{data[exc.start]:02x} at column {column})",
            hint="save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None


def check_yaml_shape(
    text: str,
    source: str,
    *,
    max_depth: int = MAX_YAML_DEPTH,
    max_nodes: int = MAX_YAML_NODES,
) -> None:
    """Refuse YAML nested deeper than ``max_depth`` or expanding (aliases included) to more
    than ``max_nodes`` values, from the parser's event stream: nothing is built, nothing
    recurses. yaml.YAMLError passes through for the caller's own syntax message."""
    total = 0
    depth = 0
    started: list[tuple[int, str | None]] = []  # (total at the start, anchor) per open level
    expanded: dict[str, int] = {}  # anchor -> values it stands for
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        anchor = getattr(event, "anchor", None)
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                raise ConfigError(
                    f"{source}:{line}: nested more than {max_depth} levels deep",
                    hint="is this the right file? kpc's YAML files are a few levels deep",
                )
            started.append((total, anchor))
            total += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            begin, opened = started.pop()
            if opened is not None:
                expanded[opened] = total - begin
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if anchor is not None:
                expanded[anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            total += expanded.get(str(event.anchor), 1)
        if total > max_nodes:
            raise ConfigError(
                f"{source}:{line}: expands to more than {max_nodes} "
                "values (YAML aliases repeating aliases?)",
                hint="write the values out; kpc's YAML files need no anchors or aliases",
            )


def load_yaml(text: str, source: str, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> Any:
    """``text`` parsed by ``loader`` (a SafeLoader) once its shape is known to be bounded.
    yaml.YAMLError passes through."""
    check_yaml_shape(text, source)
    return yaml.load(text, Loader=loader)  # a SafeLoader (sub)class: plain data only


def read_yaml(path: Path, *, what: str, limit: int = 4 * MIB) -> Any:
    """A YAML file kpc reads (not the site config, which reports problems per field)."""
    text = read_text(path, what=what, limit=limit)
    try:
        return load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: not valid YAML: {problem}",
            hint="check the indentation and quoting around that line (YAML uses spaces only)",
        ) from None
