"""What templates see, and the small text renderers bootcfg owns. Pure.

matchbox's variables (``matchbox_variables``), for Go templates and /metadata: the group's
metadata, then its selectors (names lower-cased) over it, then ``request``:
``{"query": {...validated labels, empty ones too...}, "raw_query": "..."}``.

kpc's Jinja2 context (``template_context``, for ``*.j2``): site variables
(``site_context``), then the same, plus ``mac`` (normalised, when the request has one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jinja2

from appliance.bootcfg.catalog import Group
from appliance.bootcfg.gotemplate import StringMap, go_json, go_string
from appliance.bootcfg.labels import Labels


class TemplateFailed(ValueError):
    """A generic template could not be rendered (message names the file)."""


def matchbox_variables(group: Group | None, labels: Labels) -> dict[str, Any]:
    """matchbox's template data for a request that matched ``group``."""
    data: dict[str, Any] = {}
    if group is not None:
        data.update(go_json(group.metadata))  # numbers as Go decodes JSON: float64
        data.update({key.lower(): value for key, value in group.selector.items()})
    data["request"] = {"query": StringMap(labels.values), "raw_query": labels.raw_query}
    return data


def template_context(
    site: Mapping[str, Any], group: Group | None, labels: Labels
) -> dict[str, Any]:
    context: dict[str, Any] = dict(site)
    if group is not None:
        context.update(group.metadata)
        context.update(group.selector)
    if labels.mac is not None:
        context["mac"] = labels.mac
    context["request"] = {"query": dict(labels.values), "raw_query": labels.raw_query}
    return context


def make_environment() -> jinja2.Environment:
    """Strict Jinja2 for generic files: an undefined variable is an error, not ''."""
    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def render_text(env: jinja2.Environment, text: str, context: Mapping[str, Any], source: str) -> str:
    try:
        return env.from_string(text).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailed(
            f"{source}:{exc.lineno}: template syntax error: {exc.message}"
        ) from None
    except jinja2.UndefinedError as exc:
        raise TemplateFailed(f"{source}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateFailed(f"{source}: {exc}") from None


_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def env_escape(text: str) -> str:
    """A value or name safe on one line: unchanged unless it holds a control character
    (CR and LF included); then backslashes and controls are escaped (\\n, \\r, \\xNN)."""
    if not re.search(r"[\x00-\x1f\x7f]", text):
        return text
    names = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
    return _CONTROL.sub(lambda m: names.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def _env_lines(prefix: str, data: Mapping[str, Any], out: list[str]) -> None:
    for key in sorted(data, key=str):
        value = data[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _env_lines(name + "_", value, out)
        elif isinstance(value, (str, bool, float, int)):
            out.append(f"{env_escape(name.upper())}={env_escape(go_string(value))}")
        # lists and null: matchbox writes nothing for them


def metadata_env(group: Group | None, labels: Labels) -> str:
    """matchbox's /metadata: its variables as KEY=value lines, nested names joined by _,
    upper-cased; numbers and booleans as Go prints them. Lines sorted (matchbox's order is
    random); values with control characters escaped so no line can be forged."""
    out: list[str] = []
    _env_lines("", matchbox_variables(group, labels), out)
    return "".join(line + "\n" for line in out)
