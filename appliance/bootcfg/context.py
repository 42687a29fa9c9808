"""What templates see, and the two small text renderers bootcfg owns. Pure.

Context (later entries win): site variables (``site_context``), the group's metadata, the
group's selectors, ``mac`` (normalised, when the request has one) and ``request``
(``{"query": {...validated labels...}, "raw_query": "..."}``), as in matchbox.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2

from appliance.bootcfg.catalog import Group
from appliance.bootcfg.labels import Labels


class TemplateFailed(ValueError):
    """A generic template could not be rendered (message names the file)."""


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


def _env_lines(prefix: str, data: Mapping[str, Any], out: list[str]) -> None:
    for key in sorted(data, key=str):
        value = data[key]
        name = f"{prefix}{key}".upper().replace("-", "_").replace(".", "_")
        if isinstance(value, Mapping):
            _env_lines(name + "_", value, out)
        elif isinstance(value, bool):
            out.append(f"{name}={'true' if value else 'false'}")
        elif isinstance(value, (str, int, float)):
            text = str(value).replace("\\", "\\\\").replace("\n", "\\n")
            out.append(f"{name}={text}")


def metadata_env(group: Group | None, labels: Labels) -> str:
    """matchbox's /metadata: the group's data as KEY=value lines, nested keys joined by _."""
    data: dict[str, Any] = {}
    if group is not None:
        data.update(group.metadata)
        data.update(group.selector)
    if labels.mac is not None:
        data["mac"] = labels.mac
    data["request"] = {"query": dict(labels.values), "raw_query": labels.raw_query}
    out: list[str] = []
    _env_lines("", data, out)
    return "\n".join(out) + "\n"
