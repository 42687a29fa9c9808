"""How long rendering one Ignition config takes (bootcfg does it on every /ignition request).

Per role: ``render_ignition`` (compile the template, render with StrictUndefined, parse,
structure-check), a long-lived ``Renderer`` (the same, compiled once), and a baseline
measured in the same run: the precompiled template rendered with no parse and no check.
Prints a table; asserts nothing.

    .venv/bin/python benchmarks/ignition_render.py [ROUNDS]
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jinja2

from appliance.config import parse_config
from appliance.keys import parse_authorized_keys
from appliance.render import ignition as ign

REPO = Path(__file__).resolve().parent.parent
SITE = (
    "provisioning: {interface: eth1, address: 198.18.0.2, subnet: 198.18.0.0/24}\n"
    "os: {version: 3975.2.0}\n"
)


def per_call(fn: Callable[[], object], rounds: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    config = parse_config(SITE)
    keys = parse_authorized_keys((REPO / "tests/golden/operator.pub").read_text()).keys
    context = ign.site_context(config, keys) | ign.request_context("52:54:00:12:34:56")
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.node()} python {platform.python_version()}"
        f", {rounds} rounds"
    )
    print("| role | render_ignition (ms) | Renderer, cached (ms) | baseline: render only (ms) |")
    print("|---|---|---|---|")
    renderer = ign.Renderer()
    for role in ign.ROLES:
        text = (REPO / "ignition" / f"{role}.ign.j2").read_text()
        env = jinja2.Environment(
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        env.filters.update(json=ign.to_json, shquote=ign.shell_quote, data_url=ign.data_url)
        compiled = env.from_string(text)
        full = per_call(lambda t=text: ign.render_ignition(t, context, source="b"), rounds)
        cached = per_call(lambda t=text: renderer.render(t, context, source="b"), rounds)
        base = per_call(lambda c=compiled: c.render(**context), rounds)
        print(f"| {role} | {full * 1000:.2f} | {cached * 1000:.2f} | {base * 1000:.2f} |")


if __name__ == "__main__":
    main()
