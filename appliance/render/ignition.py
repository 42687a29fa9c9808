"""Ignition configs from Jinja2 templates: strict rendering, then a structure check.

Pure: template text and a context in, a parsed Ignition config (a dict) out. Rendering uses
StrictUndefined, so a missing variable is an error, never an empty string; the result is
parsed as JSON and checked against the Ignition spec 3.3.0 object shapes (unknown keys,
wrong types, relative paths, bad data: URLs), so nobody ever gets a half-rendered config.

Templates write every value through a filter: ``json`` for JSON values, ``shquote`` for
values inside shell scripts, ``data_url`` for file contents.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from appliance.config import SiteConfig
from appliance.errors import KpcError
from appliance.keys import AuthorizedKey

IGNITION_VERSION = "3.3.0"
ROLES = ("deployhost", "install", "targetnode")
PYTHON_SYSEXT_PATH = "sysext/python.raw"  # under bootcfg's /assets/
SERVICE_KEYS = ("name", "description", "exec_start", "exec_stop")
UNIT_NAME_RE = re.compile(r"^[A-Za-z0-9:_.@-]+$")


class RenderError(KpcError):
    """A template could not be rendered into a valid Ignition config."""


# --- filters ------------------------------------------------------------------------------


def _defined(value: Any) -> Any:
    """``value``, or the StrictUndefined error when a template passed an undefined name."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def to_json(value: Any) -> str:
    """A JSON literal (string, number, list, object) for use inside a JSON template."""
    return json.dumps(_defined(value), ensure_ascii=True, default=_defined)


def shell_quote(value: Any) -> str:
    """One shell word that stands for exactly ``value``."""
    return shlex.quote(str(_defined(value)))


def data_url(text: str) -> str:
    """An RFC 2397 ``data:`` URL holding ``text`` (percent-encoded, no characters left raw)."""
    return "data:," + urllib.parse.quote(str(_defined(text)), safe="")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["json"] = to_json
    env.filters["shquote"] = shell_quote
    env.filters["data_url"] = data_url
    return env


# --- rendering ----------------------------------------------------------------------------


class Renderer:
    """Renders Ignition templates, keeping each compiled template for reuse.

    Compiling is most of the cost of a render (milliseconds, against a tenth of that for the
    render itself): a long-lived service such as bootcfg keeps one Renderer. The cache is
    keyed by the template text, so an edited template is compiled afresh.
    """

    def __init__(self, max_templates: int = 64) -> None:
        self._env = _environment()
        self._compiled: dict[str, jinja2.Template] = {}
        self._max = max_templates

    def _template(self, template_text: str) -> jinja2.Template:
        template = self._compiled.get(template_text)
        if template is None:
            template = self._env.from_string(template_text)
            if len(self._compiled) >= self._max:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[template_text] = template
        return template

    def render_text(self, template_text: str, context: Mapping[str, Any], *, source: str) -> str:
        """Render the template to text, mapping every Jinja2 failure to RenderError."""
        try:
            return self._template(template_text).render(**context)
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(
                f"{source}:{exc.lineno}: template syntax error: {exc.message}",
                hint="fix the template; 'kpc ignition render' shows the result",
            ) from None
        except jinja2.UndefinedError as exc:
            known = ", ".join(sorted(context)) or "none"
            raise RenderError(
                f"{source}: the template uses a variable that is not defined: {exc.message}",
                hint=f"defined variables: {known} (see ignition/README.md)",
            ) from None
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise RenderError(f"{source}: rendering failed: {exc}") from None

    def render(
        self, template_text: str, context: Mapping[str, Any], *, source: str
    ) -> dict[str, Any]:
        """Render, parse and structure-check an Ignition config; RenderError on any failure."""
        text = self.render_text(template_text, context, source=source)
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            lines = text.splitlines()
            shown = lines[exc.lineno - 1].strip() if 0 < exc.lineno <= len(lines) else ""
            raise RenderError(
                f"{source}: the rendered config is not JSON (rendered line {exc.lineno}, "
                f"column {exc.colno}: {exc.msg}): {shown[:120]}",
                hint="every value in a template must go through the 'json' filter",
            ) from None
        problems = check_ignition(config)
        if problems:
            raise RenderError(
                f"{source}: the rendered config is not valid Ignition {IGNITION_VERSION}: "
                + "; ".join(problems[:10]),
                hint="fix the template (ignition/README.md lists the variables)",
            )
        result: dict[str, Any] = config
        return result


def render_text(template_text: str, context: Mapping[str, Any], *, source: str) -> str:
    """Render the template to text (compiled afresh; see Renderer to reuse compilations)."""
    return Renderer(max_templates=1).render_text(template_text, context, source=source)


def render_ignition(
    template_text: str, context: Mapping[str, Any], *, source: str
) -> dict[str, Any]:
    """Render, parse and structure-check an Ignition config; RenderError on any failure.

    Compiles the template afresh; a service rendering many configs keeps a Renderer.
    """
    return Renderer(max_templates=1).render(template_text, context, source=source)


# --- structure check (Ignition spec 3.3.0) ------------------------------------------------

_NODE_REF = {"id": int, "name": str}
_RESOURCE: dict[str, Any] = {
    "source": str,
    "compression": str,
    "httpHeaders": [{"name": str, "value": str}],
    "verification": {"hash": str},
}
_SCHEMA: dict[str, Any] = {
    "ignition": {
        "version": str,
        "config": {"merge": [_RESOURCE], "replace": _RESOURCE},
        "timeouts": {"httpResponseHeaders": int, "httpTotal": int},
        "security": {"tls": {"certificateAuthorities": [_RESOURCE]}},
        "proxy": {"httpProxy": str, "httpsProxy": str, "noProxy": [str]},
    },
    "kernelArguments": {"shouldExist": [str], "shouldNotExist": [str]},
    "passwd": {
        "users": [
            {
                "name": str,
                "passwordHash": str,
                "sshAuthorizedKeys": [str],
                "uid": int,
                "gecos": str,
                "homeDir": str,
                "noCreateHome": bool,
                "primaryGroup": str,
                "groups": [str],
                "noUserGroup": bool,
                "noLogInit": bool,
                "shell": str,
                "shouldExist": bool,
                "system": bool,
            }
        ],
        "groups": [
            {"name": str, "gid": int, "passwordHash": str, "shouldExist": bool, "system": bool}
        ],
    },
    "storage": {
        "directories": [
            {"path": str, "overwrite": bool, "user": _NODE_REF, "group": _NODE_REF, "mode": int}
        ],
        "files": [
            {
                "path": str,
                "overwrite": bool,
                "user": _NODE_REF,
                "group": _NODE_REF,
                "mode": int,
                "contents": _RESOURCE,
                "append": [_RESOURCE],
            }
        ],
        "links": [
            {
                "path": str,
                "overwrite": bool,
                "user": _NODE_REF,
                "group": _NODE_REF,
                "target": str,
                "hard": bool,
            }
        ],
    },
    "systemd": {
        "units": [
            {
                "name": str,
                "enabled": bool,
                "mask": bool,
                "contents": str,
                "dropins": [{"name": str, "contents": str}],
            }
        ]
    },
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}
URL_SCHEMES = ("data", "http", "https", "tftp", "s3", "gs", "arn")


def _shape(value: Any, schema: Any, path: str, problems: list[str]) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            problems.append(f"{path or '(top)'}: expected an object")
            return
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if key not in schema:
                problems.append(f"{where}: unknown key")
            elif child is not None:
                _shape(child, schema[key], where, problems)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return
        for index, item in enumerate(value):
            _shape(item, schema[0], f"{path}[{index}]", problems)
    else:
        ok = isinstance(value, schema) and (schema is bool or not isinstance(value, bool))
        if not ok:
            problems.append(f"{path}: expected {_TYPE_NAMES[schema]}")


def _check_source(url: str, where: str, problems: list[str]) -> None:
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme not in URL_SCHEMES:
        problems.append(f"{where}: {url[:60]!r} is not a URL Ignition can fetch")
    elif scheme == "data" and "," not in url:
        problems.append(f"{where}: a data: URL needs a ',' before its contents")
    elif scheme in ("http", "https"):
        parsed = urllib.parse.urlsplit(url)
        if not parsed.hostname:
            problems.append(f"{where}: URL {url[:60]!r} has no host")


def check_ignition(config: Any) -> list[str]:
    """Everything wrong with ``config`` as an Ignition 3.3.0 config (empty when valid)."""
    problems: list[str] = []
    _shape(config, _SCHEMA, "", problems)
    if problems:
        return problems
    version = config.get("ignition", {}).get("version")
    if version != IGNITION_VERSION:
        problems.append(f"ignition.version: expected {IGNITION_VERSION!r}, got {version!r}")
    storage = config.get("storage", {})
    seen: set[str] = set()
    for kind in ("files", "directories", "links"):
        for index, entry in enumerate(storage.get(kind, [])):
            where = f"storage.{kind}[{index}]"
            path = entry.get("path", "")
            if not path.startswith("/"):
                problems.append(f"{where}.path: {path!r} is not an absolute path")
            if path in seen:
                problems.append(f"{where}.path: {path} is defined twice")
            seen.add(path)
            if kind == "links" and not entry.get("target"):
                problems.append(f"{where}.target: a link needs a target")
            mode = entry.get("mode")
            if mode is not None and not 0 <= mode <= 0o7777:
                problems.append(f"{where}.mode: {mode} is not a file mode")
            source = entry.get("contents", {}).get("source")
            if source is not None:
                _check_source(source, f"{where}.contents.source", problems)
    units: set[str] = set()
    for index, unit in enumerate(config.get("systemd", {}).get("units", [])):
        name = unit.get("name", "")
        where = f"systemd.units[{index}]"
        if not UNIT_NAME_RE.match(name) or "." not in name:
            problems.append(f"{where}.name: {name!r} is not a systemd unit name")
        if name in units:
            problems.append(f"{where}.name: {name} is defined twice")
        units.add(name)
    for index, user in enumerate(config.get("passwd", {}).get("users", [])):
        if not user.get("name"):
            problems.append(f"passwd.users[{index}].name: a user needs a name")
    return problems


# --- context ------------------------------------------------------------------------------


def check_services(services: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Validate the service unit descriptions the deployhost template turns into units."""
    checked: list[dict[str, str]] = []
    for index, service in enumerate(services):
        missing = [key for key in SERVICE_KEYS if not service.get(key)]
        if missing:
            raise RenderError(f"service #{index + 1} has no {', '.join(missing)}")
        name = service["name"]
        if not UNIT_NAME_RE.match(name) or name.endswith(".service"):
            raise RenderError(
                f"service name {name!r} cannot be a systemd unit name",
                hint="use letters, digits and - _ . @ only, without '.service'",
            )
        for key in SERVICE_KEYS:
            if "\n" in service[key] or "\r" in service[key]:
                raise RenderError(f"service {name}: {key} must be one line")
        checked.append({key: service[key] for key in SERVICE_KEYS})
    names = [s["name"] for s in checked]
    if len(set(names)) != len(names):
        raise RenderError(f"service names repeat: {', '.join(names)}")
    return checked


def site_context(
    config: SiteConfig,
    keys: Sequence[AuthorizedKey],
    *,
    os_version: str | None = None,
    bootcfg_token: str | None = None,
    services: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """The site variables every template sees (ignition/README.md documents each one).

    ``os_version`` is the concrete Flatcar version when the config says ``version: host``
    (the caller detects it); without it such a config is an error.
    """
    version = config.os.version
    if version == "host":
        if not os_version:
            raise RenderError(
                "os.version is 'host' (the same as this deploy host), but this host's Flatcar "
                "version is not known here",
                hint="set os.version in the site config to a release such as 3975.2.0 or "
                "'current', or render on the Flatcar deploy host",
            )
        version = os_version
    disk = config.os.install_disk
    bootcfg_host = str(config.provisioning.address)
    return {
        "ignition_version": IGNITION_VERSION,
        "ssh_keys": [key.line for key in keys],
        "ssh_user": config.ssh.user,
        "bootcfg_url": config.bootcfg_url,
        "bootcfg_peers": list(config.bootcfg.peers),
        "bootcfg_host": bootcfg_host,
        "bootcfg_token": bootcfg_token or "",
        "deploy_host": bootcfg_host,
        "os_flavor": config.os.flavor,
        "os_channel": config.os.channel,
        "os_version": version,
        "os_mirror": config.os_mirror,
        "os_install_base": config.os_install_base,
        "registry": _host_port(config.registry_address, config.registry.port),
        "registry_insecure": not config.registry.tls,
        "install_disk": {
            "by_path": disk.by_path or "",
            "by_id": disk.by_id or "",
            "smallest": disk.smallest,
        },
        "python_sysext_url": f"{config.bootcfg_url}/assets/{PYTHON_SYSEXT_PATH}",
        "services": check_services(services),
    }


def _host_port(address: ipaddress.IPv4Address, port: int) -> str:
    return f"{address}:{port}"


def request_context(mac: str | None, query: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Per-request variables as bootcfg provides them: ``mac`` and ``request``."""
    query = dict(query or {})
    return {
        "mac": mac or "",
        "request": {"query": query, "raw_query": urllib.parse.urlencode(query)},
    }


def dumps(config: Mapping[str, Any]) -> str:
    """The config as the file kpc writes or serves (stable key order, trailing newline)."""
    return json.dumps(config, indent=2) + "\n"


__all__ = [
    "IGNITION_VERSION",
    "ROLES",
    "RenderError",
    "Renderer",
    "check_ignition",
    "check_services",
    "data_url",
    "dumps",
    "render_ignition",
    "render_text",
    "request_context",
    "shell_quote",
    "site_context",
    "to_json",
]
