"""What rendering a matchbox Go template costs bootcfg per /ignition or /generic request.

The same Ignition config written two ways: as a matchbox Go template (rendered by
``appliance.bootcfg.gotemplate``, parsed once at load as bootcfg does) and as the
equivalent Jinja2 template compiled once (the baseline: what bootcfg already does for kpc's
own ``*.j2`` templates), measured in the same run. Both outputs are checked equal first.
Prints a table; asserts nothing.

    .venv/bin/python benchmarks/gotemplate_render.py [ROUNDS]
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable

import jinja2

from appliance.bootcfg.gotemplate import parse

KEYS = [f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA{i:04d} op{i}" for i in range(10)]
PEERS = [f"etcd{i}=http://10.0.0.{10 + i}:2380" for i in range(5)]
DATA = {
    "etcd_name": "etcd0",
    "port": 2379.0,
    "ssh_authorized_keys": KEYS,
    "peers": PEERS,
    "request": {"query": {"mac": "52:54:00:12:34:56", "os": "installed"}, "raw_query": "x"},
}

GO = """{
  "ignition": {"version": "3.3.0"},
  "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [
    {{- range $i, $k := .ssh_authorized_keys}}{{if $i}},{{end}}"{{$k}}"{{end}}]}]},
  "systemd": {"units": [{"name": "etcd.service", "enabled": true,
    "contents": "ETCD_NAME={{.etcd_name}}\\nPEERS=
    {{- range $i, $p := .peers}}{{if $i}},{{end}}{{$p}}{{end}}\\nPORT={{.port}}\\n
    {{- if eq .request.query.os "installed"}}INSTALLED=1{{else}}INSTALLED=0{{end}}"}]},
  "storage": {"files": [{"path": "/etc/hostname", "mode": 420,
    "contents": {"source": "data:,{{.etcd_name}}"}}]}
}
"""

JINJA = """{
  "ignition": {"version": "3.3.0"},
  "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [
    {%- for k in ssh_authorized_keys %}{% if not loop.first %},{% endif %}"{{k}}"{% endfor %}]}]},
  "systemd": {"units": [{"name": "etcd.service", "enabled": true,
    "contents": "ETCD_NAME={{etcd_name}}\\nPEERS=
    {%- for p in peers %}{% if not loop.first %},{% endif %}{{p}}{% endfor %}\\n
    {#- #}PORT={{port|int}}\\n
    {%- if request.query.os == "installed" %}INSTALLED=1{% else %}INSTALLED=0{% endif %}"}]},
  "storage": {"files": [{"path": "/etc/hostname", "mode": 420,
    "contents": {"source": "data:,{{etcd_name}}"}}]}
}
"""


def per_call(fn: Callable[[], object], rounds: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    go = parse(GO, "bench.ign")
    jinja = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(JINJA)
    assert json.loads(go.render(DATA)) == json.loads(jinja.render(DATA)), "outputs differ"
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.node()} python {platform.python_version()}"
        f", {rounds} rounds"
    )
    print("| what | per render (ms) |")
    print("|---|---|")
    rows = [
        ("Go template, parsed once (bootcfg)", lambda: go.render(DATA)),
        ("Go template, parse + render", lambda: parse(GO, "bench.ign").render(DATA)),
        ("baseline: Jinja2, compiled once", lambda: jinja.render(DATA)),
        ("Go template render + json.loads (what /ignition does)",
         lambda: json.loads(go.render(DATA))),
    ]  # fmt: skip
    for name, fn in rows:
        print(f"| {name} | {per_call(fn, rounds) * 1000:.3f} |")


if __name__ == "__main__":
    main()
