"""Service specs, the up plan and health judgement: pure, no Docker needed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appliance.config import SiteConfig, load_config, parse_config
from appliance.drivers.docker import ContainerInfo
from appliance.errors import ConfigError, DockerError, UsageError
from appliance.services.health import judge
from appliance.services.lifecycle import check_purgeable, plan_up, purge_data
from appliance.services.spec import (
    LABEL_HASH,
    LABEL_SERVICE,
    SERVICES,
    env_secrets_needed,
    select_services,
    service_specs,
)

CONFIG_FILE = Path("/etc/kpc/kpc.yaml")
BASE = """
provisioning: {interface: eth1, address: 10.20.0.2, subnet: 10.20.0.0/24}
bootcfg: {port: 8080, data_dir: /var/lib/kpc/bootcfg}
registry: {port: 5000, storage: /var/lib/kpc/registry}
services: {prefix: kpcb}
images: {prefix: kpcbimg}
"""


def config(extra: str = "") -> SiteConfig:
    return parse_config(BASE + extra, "test.yaml")


def specs(extra: str = "") -> dict[str, Any]:
    return service_specs(config(extra), CONFIG_FILE)


def test_names_images_and_order() -> None:
    s = specs()
    assert list(s) == ["registry", "bootcfg", "dnsmasq"]  # web is off unless enabled
    assert list(SERVICES) == ["registry", "bootcfg", "dnsmasq", "web"]
    assert {k: v.name for k, v in s.items()} == {k: f"kpcb-{k}" for k in s}
    assert {k: v.image for k, v in s.items()} == {k: f"kpcbimg/{k}:latest" for k in s}
    assert all(v.restart == "unless-stopped" and v.health is not None for v in s.values())


def test_dnsmasq_runs_on_the_host_network_as_a_proxy() -> None:
    d = specs()["dnsmasq"]
    assert d.network == "host" and d.cap_add == ("NET_ADMIN",) and d.ports == ()
    assert "--interface=eth1" in d.command
    assert "--dhcp-range=10.20.0.0,proxy,255.255.255.0" in d.command
    assert "--pxe-service=tag:ipxe,x86PC,bootcfg,http://10.20.0.2:8080/boot.ipxe" in d.command
    assert d.health is not None and "tftp -g -r undionly.kpxe" in d.health.command
    assert d.health.command.endswith(" 10.20.0.2")


def test_bootcfg_publishes_its_port_and_mounts_data_and_config() -> None:
    b = specs()["bootcfg"]
    assert [p.publish_arg() for p in b.ports] == ["0.0.0.0:8080:8080/tcp"]
    mounts = {m.target: (m.source, m.read_only) for m in b.mounts}
    assert mounts["/etc/kpc/kpc.yaml"] == (CONFIG_FILE, True)
    assert mounts["/var/lib/kpc/bootcfg"] == (Path("/var/lib/kpc/bootcfg"), False)
    assert b.command[-4:] == ("bootcfg", "serve", "--listen", "0.0.0.0")
    assert b.health is not None and "http://127.0.0.1:8080/healthz" in b.health.command
    listen = service_specs(
        parse_config(BASE.replace("port: 8080,", "port: 8080, listen: 10.20.0.2,"), "t"),
        CONFIG_FILE,
    )["bootcfg"]
    assert [p.publish_arg() for p in listen.ports] == ["10.20.0.2:8080:8080/tcp"]


def test_bootcfg_secrets_travel_by_name_or_as_a_read_only_file() -> None:
    by_env = service_specs(
        parse_config(BASE.replace("bootcfg: {", "bootcfg: {token: {env: KPCB_TOKEN}, "), "t"),
        CONFIG_FILE,
    )
    assert by_env["bootcfg"].secret_env == ("KPCB_TOKEN",)
    assert env_secrets_needed(by_env) == ["KPCB_TOKEN"]
    assert "KPCB_TOKEN" not in " ".join(by_env["bootcfg"].command)
    by_file = service_specs(
        parse_config(BASE.replace("bootcfg: {", "bootcfg: {token: {file: /etc/kpc/token}, "), "t"),
        CONFIG_FILE,
    )["bootcfg"]
    assert by_file.secret_env == ()
    assert any(m.target == "/etc/kpc/token" and m.read_only for m in by_file.mounts)


def test_an_etcd_registry_reaches_bootcfg_and_web_with_its_secrets_by_reference() -> None:
    etcd = (
        "state: {backend: etcd, etcd: {endpoints: [https://10.20.0.5:2379], "
        "ca_file: /etc/kpc/etcd/ca.crt, cert_file: /etc/kpc/etcd/client.crt, "
        "key: {file: /etc/kpc/secrets/etcd.key}, user: kpc, password: {env: KPCB_ETCD}}}\n"
        "web: {enabled: true, password: {file: /etc/kpc/secrets/web}}\n"
    )
    s = specs(etcd)
    for name in ("bootcfg", "web"):
        spec = s[name]
        assert spec.secret_env == ("KPCB_ETCD",)
        targets = {m.target: m.read_only for m in spec.mounts}
        for path in (
            "/etc/kpc/etcd/ca.crt",
            "/etc/kpc/etcd/client.crt",
            "/etc/kpc/secrets/etcd.key",
        ):
            assert targets.get(path) is True, (name, path)
        assert "KPCB_ETCD" not in " ".join(spec.command)
    assert env_secrets_needed(s) == ["KPCB_ETCD"]


def test_state_db_outside_the_data_dir_is_mounted_too() -> None:
    b = service_specs(
        parse_config(BASE.replace("bootcfg: {", "bootcfg: {state_db: /srv/kpc/m.db, "), "t"),
        CONFIG_FILE,
    )["bootcfg"]
    assert any(m.source == Path("/srv/kpc") and m.target == "/srv/kpc" for m in b.mounts)


def test_registry_port_storage_and_address() -> None:
    r = specs()["registry"]
    assert [p.publish_arg() for p in r.ports] == ["0.0.0.0:5000:5000/tcp"]
    assert [(m.source, m.target) for m in r.mounts] == [
        (Path("/var/lib/kpc/registry"), "/var/lib/docker-registry")
    ]
    pinned = service_specs(
        parse_config(BASE.replace("registry: {", "registry: {address: 127.0.0.1, "), "t"),
        CONFIG_FILE,
    )["registry"]
    assert [p.publish_arg() for p in pinned.ports] == ["127.0.0.1:5000:5000/tcp"]
    with pytest.raises(ConfigError, match="not supported"):
        service_specs(
            parse_config(BASE.replace("registry: {", "registry: {tls: true, "), "t"), CONFIG_FILE
        )


def hashes(extra: str = "", base: str = BASE) -> dict[str, str]:
    s = service_specs(parse_config(base + extra, "t"), CONFIG_FILE)
    return {k: dict(v.labels)[LABEL_HASH] for k, v in s.items()}


def test_a_change_touches_only_the_services_it_concerns() -> None:
    before = hashes()
    assert hashes() == before  # stable
    # bootcfg reads the whole site config: every change restarts it, and only it here
    timeout = hashes("services: {prefix: kpcb, health_timeout: 99}\n", BASE.replace(
        "services: {prefix: kpcb}\n", ""))  # fmt: skip
    assert {k for k in before if timeout[k] != before[k]} == {"bootcfg"}
    moved = hashes(base=BASE.replace("port: 5000", "port: 5001"))
    assert {k for k in before if moved[k] != before[k]} == {"registry", "bootcfg"}
    nic = hashes(base=BASE.replace("interface: eth1", "interface: eth2"))
    assert {k for k in before if nic[k] != before[k]} == {"dnsmasq", "bootcfg"}


def test_select_services() -> None:
    assert select_services([]) == list(SERVICES)
    assert select_services(["dnsmasq", "registry"]) == ["registry", "dnsmasq"]
    with pytest.raises(UsageError, match="no such service: dhcp") as info:
        select_services(["dhcp"])
    assert info.value.hint == "kpc runs: registry, bootcfg, dnsmasq, web"
    enabled = ("registry", "bootcfg", "dnsmasq")
    assert select_services([], enabled) == list(enabled)
    with pytest.raises(UsageError, match="service web is not enabled") as off:
        select_services(["web"], enabled)
    assert off.value.hint is not None and "web.enabled: true" in off.value.hint


WEB = """
web: {enabled: true, port: 8070, password: {file: /etc/kpc/secrets/web-password}}
paths: {log_dir: /var/log/kpc}
"""


def test_web_runs_when_enabled_with_its_secret_as_a_read_only_file() -> None:
    w = specs(WEB)["web"]
    assert w.image == "kpcbimg/bootcfg:latest"  # the image that holds kpc
    assert w.command == ("--config", "/etc/kpc/kpc.yaml", "web")
    assert w.network == "host" and w.ports == ()
    volumes = {m.volume_arg() for m in w.mounts}
    assert volumes == {
        "/etc/kpc/kpc.yaml:/etc/kpc/kpc.yaml:ro",
        "/var/lib/kpc/bootcfg:/var/lib/kpc/bootcfg:rw",
        "/var/log/kpc:/var/log/kpc:rw",
        "/etc/kpc/secrets/web-password:/etc/kpc/secrets/web-password:ro",
    }
    assert w.secret_env == ()  # no BMC password without actions
    assert w.health is not None and "http://10.20.0.2:8070/healthz" in w.health.command
    acting = specs(WEB.replace("enabled: true", "enabled: true, actions: true"))["web"]
    assert acting.secret_env == ("KPC_BMC_PASSWORD",)


def info(**overrides: Any) -> ContainerInfo:
    base = ContainerInfo(
        name="kpcb-registry", id="c1", image_id="sha256:img", image="kpcbimg/registry:latest",
        status="running", running=True, restarting=False, exit_code=0, restart_count=0,
        health="healthy", health_output=None, started_at=datetime(2026, 1, 1, tzinfo=UTC),
        labels={}, ports=(), network=None,
    )  # fmt: skip
    return replace(base, **overrides)


def test_plan_up_is_idempotent_and_says_why() -> None:
    s = {"registry": specs()["registry"]}
    h = dict(s["registry"].labels)[LABEL_HASH]
    ids = {s["registry"].image: "sha256:img"}

    def verb(current: ContainerInfo | None) -> tuple[str, str]:
        action = plan_up(s, {"registry": current}, ids)[0]
        return action.verb, action.reason

    ours = {LABEL_SERVICE: "registry", LABEL_HASH: h}
    assert verb(None) == ("create", "not there yet")
    assert verb(info(labels=ours)) == ("keep", "running and unchanged")
    assert verb(info(labels={**ours, LABEL_HASH: "old"})) == (
        "recreate",
        "its configuration changed",
    )
    assert verb(info(labels=ours, image_id="sha256:older")) == (
        "recreate",
        "kpcbimg/registry:latest was rebuilt",
    )
    stopped = info(labels=ours, running=False, status="exited")
    assert verb(stopped) == ("start", "it was exited")
    with pytest.raises(DockerError, match="exists, but kpc did not create it") as caught:
        verb(info(labels={}))
    assert caught.value.hint is not None and "docker rm -f kpcb-registry" in caught.value.hint


def test_judge() -> None:
    assert judge(info()) is None
    assert judge(info(health="starting")) is None
    assert judge(None) == "its container does not exist (run 'kpc up')"
    looping = judge(info(restarting=True, running=False, exit_code=1, restart_count=4))
    assert looping == "it keeps crashing (exit code 1, 4 restarts)"
    assert judge(info(running=False, status="exited", exit_code=2)) == (
        "it is exited (exit code 2)"
    )
    assert judge(info(health="unhealthy", health_output="wget: refused\n")) == (
        "its health check fails: wget: refused"
    )
    once = judge(info(running=True, health="starting", restart_count=1))
    assert once == "it keeps crashing (1 restart)"
    # crashed once long ago but healthy now: fine
    assert judge(info(restart_count=1)) is None


@pytest.mark.parametrize("path", ["/", "/var", "/var/lib", "/srv", "/home", "/tmp"])
def test_purge_refuses_system_directories(path: str) -> None:
    with pytest.raises(UsageError, match="refusing to purge"):
        check_purgeable(Path(path))


def test_purge_empties_a_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "registry"
    (data / "docker" / "v2").mkdir(parents=True)
    (data / "docker" / "v2" / "blob").write_text("x")
    (data / "link").symlink_to(tmp_path)  # a symlink is removed, never followed
    purge_data(data)
    assert not data.exists() and tmp_path.exists()


def test_services_network_puts_every_service_into_one_namespace(tmp_path: Path) -> None:
    """services.network: container:NAME joins every service to that container's network
    namespace and publishes nothing (Docker cannot publish ports there)."""
    config = _shared_config(tmp_path, "container:kpc-h2-netns")
    specs = service_specs(config, tmp_path / "kpc.yaml")
    assert {s.network for s in specs.values()} == {"container:kpc-h2-netns"}
    assert all(s.ports == () for s in specs.values())
    assert dict(specs["registry"].env)["REGISTRY_HTTP_ADDR"] == ":5000"
    default = service_specs(_shared_config(tmp_path, None), tmp_path / "kpc.yaml")
    assert default["dnsmasq"].network == "host" and default["bootcfg"].network is None
    assert default["bootcfg"].ports and default["registry"].env == ()


def test_services_network_must_name_a_container(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _shared_config(tmp_path, "host")
    problem = " ".join(err.value.problems)
    assert "services.network" in problem and "container:NAME" in problem, problem


def _shared_config(tmp_path: Path, network: str | None) -> SiteConfig:
    text = (
        "provisioning: {interface: site0, address: 198.18.0.3, subnet: 198.18.0.0/24}\n"
        f"bootcfg: {{data_dir: {tmp_path / 'data'}}}\n"
        f"registry: {{storage: {tmp_path / 'reg'}}}\n"
    )
    if network is not None:
        text += f"services: {{network: '{network}'}}\n"
    path = tmp_path / "shared.yaml"
    path.write_text(text)
    return load_config(path)
