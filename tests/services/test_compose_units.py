"""compose/docker-compose.yml and the deploy host's systemd units follow the same specs as
``kpc up``."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from appliance.config import SiteConfig, parse_config
from appliance.drivers.docker import ContainerSpec
from appliance.render.ignition import render_ignition, site_context
from appliance.services.spec import LABEL_HASH, LABEL_SITE, SERVICES, service_specs
from appliance.services.units import systemd_escape, systemd_services
from tests.conftest import REPO, require_docker, require_tool, wait_for
from tests.services.conftest import TAG, docker_names, free_port, site

COMPOSE = REPO / "compose" / "docker-compose.yml"
ENV_FILE = REPO / "compose" / "kpc.env"


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR} substitution (every variable must be defined in the env file)."""
    if isinstance(node, str):

        def value(match: re.Match[str]) -> str:
            assert match.group(1) in env, f"{match.group(1)} is not in {ENV_FILE.name}"
            return env[match.group(1)]

        return re.sub(r"\$\{([A-Z0-9_]+)\}", value, node)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(item, env) for key, item in node.items()}
    return node


def config_from_env(env: dict[str, str]) -> SiteConfig:
    registry: dict[str, Any] = {
        "port": int(env["KPC_REGISTRY_PORT"]),
        "storage": env["KPC_REGISTRY_STORAGE"],
    }
    if env["KPC_REGISTRY_ADDRESS"] != "0.0.0.0":
        registry["address"] = env["KPC_REGISTRY_ADDRESS"]
    data = {
        "provisioning": {
            "interface": env["KPC_PROVISIONING_INTERFACE"],
            "address": env["KPC_PROVISIONING_ADDRESS"],
            "subnet": f"{env['KPC_PROVISIONING_NETWORK']}/{env['KPC_PROVISIONING_NETMASK']}",
        },
        "bootcfg": {
            "listen": env["KPC_BOOTCFG_LISTEN"],
            "port": int(env["KPC_BOOTCFG_PORT"]),
            "data_dir": env["KPC_BOOTCFG_DATA_DIR"],
        },
        "registry": registry,
        "services": {"prefix": env["KPC_SERVICES_PREFIX"]},
        "images": {"prefix": env["KPC_IMAGES_PREFIX"]},
        "paths": {"log_dir": env["KPC_LOG_DIR"]},
        "web": {
            "enabled": True,
            "port": int(env["KPC_WEB_PORT"]),
            "password": {"file": env["KPC_WEB_PASSWORD_FILE"]},
        },
    }
    return parse_config(yaml.safe_dump(data), str(ENV_FILE))


def as_compose(spec: ContainerSpec) -> dict[str, Any]:
    """How a spec reads in compose's terms (labels kpc computes at run time left out)."""
    view: dict[str, Any] = {
        "image": spec.image,
        "container_name": spec.name,
        "restart": spec.restart,
        "labels": {k: v for k, v in spec.labels if k not in (LABEL_HASH, LABEL_SITE)},
    }
    if spec.command:
        view["command"] = list(spec.command)
    if spec.network:
        view["network_mode"] = spec.network
    if spec.cap_add:
        view["cap_add"] = list(spec.cap_add)
    if spec.ports:
        view["ports"] = [p.publish_arg() for p in spec.ports]
    if spec.mounts:
        view["volumes"] = [m.volume_arg() for m in spec.mounts]
    if spec.env:
        view["environment"] = dict(spec.env)
    if spec.health:
        h = spec.health
        view["healthcheck"] = {
            "test": ["CMD-SHELL", h.command],
            "interval": f"{h.interval}s",
            "timeout": f"{h.timeout}s",
            "retries": h.retries,
            "start_period": f"{h.start_period}s",
        }
    return view


def test_compose_file_matches_what_kpc_up_runs() -> None:
    env = read_env(ENV_FILE)
    document = interpolate(yaml.safe_load(COMPOSE.read_text()), env)
    specs = service_specs(config_from_env(env), Path(env["KPC_CONFIG"]))
    assert list(document["services"]) == list(SERVICES) == list(specs)
    for name, spec in specs.items():
        compose = dict(document["services"][name])
        compose.pop("depends_on", None)
        # off unless asked for, in compose as in kpc up (web.enabled)
        assert compose.pop("profiles", None) == (["web"] if name == "web" else None)
        assert compose == as_compose(spec), f"compose service {name} drifted from kpc up's spec"


# --- systemd units ---------------------------------------------------------------------


def systemd_unquote(word: str) -> str:
    """Undo ``systemd_escape`` the way systemd reads one double-quoted ExecStart word."""
    assert word.startswith('"') and word.endswith('"')
    text = word[1:-1].replace("$$", "\0DOLLAR").replace("%%", "\0PERCENT")
    assert "$" not in text and "%" not in text, "unescaped $ or % would be expanded by systemd"
    text = re.sub(r"\\(.)", r"\1", text)
    return text.replace("\0DOLLAR", "$").replace("\0PERCENT", "%")


def unit_argv(exec_start: str) -> list[str]:
    """The argv of a unit's ExecStart (/bin/sh -c "<script>")."""
    shell, flag, rest = exec_start.split(" ", 2)
    assert (shell, flag) == ("/bin/sh", "-c")
    return [shell, flag, systemd_unquote(rest)]


def test_systemd_escape_round_trips_awkward_text() -> None:
    text = """a "quoted" $HOME 100% back\\slash 'single'"""
    assert systemd_unquote(systemd_escape(text)) == text


def units_config(extra: str = "") -> SiteConfig:
    return parse_config(
        "provisioning: {interface: eth1, address: 10.20.0.2, subnet: 10.20.0.0/24}\n" + extra,
        "t.yaml",
    )


def test_units_run_the_same_containers_as_kpc_up() -> None:
    config = units_config("web: {enabled: true, password: {file: /etc/kpc/secrets/web}}\n")
    units = systemd_services(config)
    specs = service_specs(config, Path("/etc/kpc/kpc.yaml"))
    assert [u["name"] for u in units] == [s.name for s in specs.values()]
    for unit, spec in zip(units, specs.values(), strict=True):
        assert "\n" not in unit["exec_start"]
        script = unit_argv(unit["exec_start"])[2]
        steps = script.split("; ")
        assert steps[0] == f"/usr/bin/docker rm --force {spec.name} >/dev/null 2>&1"
        run = shlex.split(steps[-1].removeprefix("exec "))
        assert run[:5] == ["/usr/bin/docker", "run", "--rm", "--name", spec.name]
        image_at = run.index(spec.image)
        assert run[image_at + 1 :] == list(spec.command)
        options = run[5:image_at]
        assert "--restart" not in options  # systemd restarts it
        for key, value in spec.labels:
            assert f"{key}={value}" in options
        for mount in spec.mounts:
            assert mount.volume_arg() in options
        for port in spec.ports:
            assert port.publish_arg() in options
        assert unit["exec_stop"] == f"/usr/bin/docker stop --time 10 {spec.name}"


def test_unit_secrets_come_from_an_env_file_by_name() -> None:
    config = units_config("bootcfg: {token: {env: KPCB_TOKEN}}\n")
    bootcfg = next(u for u in systemd_services(config) if u["name"] == "kpc-bootcfg")
    script = unit_argv(bootcfg["exec_start"])[2]
    assert "if test -r /etc/kpc/secrets.env; then . /etc/kpc/secrets.env; fi" in script
    run = shlex.split(script.split("; ")[-1].removeprefix("exec "))
    assert run[run.index("KPCB_TOKEN") - 1] == "--env"  # the name only, never a value
    assert "test -e /etc/kpc/kpc.yaml ||" in script


def test_deployhost_ignition_with_the_units_validates() -> None:
    require_tool("ignition-validate")
    config = units_config("web: {enabled: true, password: {file: /etc/kpc/secrets/web}}\n")
    template = (REPO / "ignition" / "deployhost.ign.j2").read_text()
    context = site_context(config, [], os_version="3815.2.5", services=systemd_services(config))
    rendered = render_ignition(template, context, source="deployhost.ign.j2")
    names = [u["name"] for u in rendered["systemd"]["units"]]
    assert {f"kpc-{s}.service" for s in SERVICES} <= set(names)
    done = subprocess.run(
        ["ignition-validate", "-"], input=json.dumps(rendered), capture_output=True, text=True
    )
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr


def test_a_unit_really_runs_its_container(built_images: dict[str, Any], tmp_path: Path) -> None:
    """Run the registry unit's ExecStart in the foreground, as systemd would, then ExecStop."""
    prefix = f"{TAG}-unit"
    data = site(tmp_path, prefix, registry={"address": "127.0.0.1", "port": free_port()})
    config = parse_config(yaml.safe_dump(data), "unit.yaml")
    unit = next(u for u in systemd_services(config) if u["name"] == f"{prefix}-registry")
    port = data["registry"]["port"]
    proc = subprocess.Popen(unit_argv(unit["exec_start"]), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:

        def answers() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as reply:
                return reply.status == 200

        wait_for(answers, 30, "the registry started by its systemd unit", alive=proc)
        labels = subprocess.run(
            ["docker", "inspect", "--format", "{{json .Config.Labels}}", f"{prefix}-registry"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert json.loads(labels)["kpc.service"] == "registry"
    finally:
        subprocess.run(shlex.split(unit["exec_stop"]), capture_output=True)
        code = proc.wait(timeout=30)
    assert code in (0, 143), f"docker run ended with {code}"
    wait_for(lambda: f"{prefix}-registry" not in docker_names(), 10, "the --rm container to go")


def test_a_unit_whose_image_is_missing_says_which_and_how_to_make_it(tmp_path: Path) -> None:
    """On a freshly installed deploy host no image exists yet: no pull from Docker Hub."""
    require_docker()
    prefix = f"{TAG}-noimage"
    data = site(tmp_path, prefix, images_prefix="kpc-never-built")
    config = parse_config(yaml.safe_dump(data), "unit.yaml")
    unit = next(u for u in systemd_services(config) if u["name"] == f"{prefix}-registry")
    done = subprocess.run(unit_argv(unit["exec_start"]), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    image = shlex.split(unit_argv(unit["exec_start"])[2].split("; ")[-1]).pop()
    assert image.startswith("kpc-never-built/"), image
    assert done.stderr.strip() == (
        f"image {image} is missing: load kpc's images with 'kpc images load BUNDLE' (a bundle "
        "made by 'kpc images save' where they were built), or build them here with "
        "'kpc images base' and 'kpc images build'"
    )
