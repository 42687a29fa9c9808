"""What each kpc service container looks like, derived from the site config. Pure.

These specs are the single source for ``kpc up`` (through the Docker driver), the deploy
host's systemd units (``units.py``) and, checked by a test, ``compose/docker-compose.yml``.
Containers are named ``{services.prefix}-{service}`` and labelled with the service, the
prefix and a hash of their spec: ``kpc up`` recreates a container only when that hash (or the
image behind its tag) changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from appliance.config import SecretRef, SiteConfig, dump_config
from appliance.drivers.docker import ContainerSpec, Healthcheck, Mount, PortMap
from appliance.errors import ConfigError, UsageError
from appliance.images.catalog import image_ref
from appliance.render.dnsmasq import BIOS_LOADER, ProxyDhcp, as_args, proxy_dhcp_options

# start order: dnsmasq points at bootcfg; web (only with web.enabled) reads bootcfg's registry
SERVICES = ("registry", "bootcfg", "dnsmasq", "web")
LABEL_SERVICE = "kpc.service"
LABEL_PREFIX = "kpc.prefix"
LABEL_HASH = "kpc.spec-hash"
LABEL_SITE = "kpc.site-config-hash"

CONFIG_IN_CONTAINER = "/etc/kpc/kpc.yaml"
REGISTRY_PORT = 5000  # inside the container
REGISTRY_STORAGE = "/var/lib/docker-registry"  # inside the container

# Docker runs the health check every HEALTH.interval seconds; `kpc up` polls the same command
# itself, so it does not wait for Docker's first interval.
HEALTH = {"interval": 10, "timeout": 5, "retries": 3, "start_period": 20}
# Which config key to change when a service's published port is taken.
PORT_KEYS = {"registry": "registry.port", "bootcfg": "bootcfg.port", "web": "web.port"}


def container_name(config: SiteConfig, service: str) -> str:
    return f"{config.services.prefix}-{service}"


def _labels(config: SiteConfig, service: str, **extra: str) -> tuple[tuple[str, str], ...]:
    labels = {LABEL_SERVICE: service, LABEL_PREFIX: config.services.prefix, **extra}
    return tuple(sorted(labels.items()))


def _health(command: str) -> Healthcheck:
    return Healthcheck(command=command, **HEALTH)


def _wget(url: str) -> str:
    # (busybox 1.35's own -T timeout crashes; coreutils' timeout bounds it instead)
    return f"timeout 3 busybox wget -q -O /dev/null {url}"


def dnsmasq_spec(config: SiteConfig) -> ContainerSpec:
    """Proxy-DHCP + TFTP on the provisioning interface (host network, NET_ADMIN)."""
    prov = config.provisioning
    proxy = ProxyDhcp(
        interface=prov.interface,
        address=prov.address,
        subnet=prov.subnet,
        boot_url=f"{config.bootcfg_url}/boot.ipxe",
    )
    try:
        options = proxy_dhcp_options(proxy)
    except ValueError as exc:
        raise ConfigError(f"provisioning: {exc}") from None
    return ContainerSpec(
        name=container_name(config, "dnsmasq"),
        image=image_ref(config, "dnsmasq"),
        command=tuple(as_args(options)),
        network=config.services.network or "host",
        cap_add=("NET_ADMIN",),
        health=_health(f"timeout 3 busybox tftp -g -r {BIOS_LOADER} -l /dev/null {prov.address}"),
        labels=_labels(config, "dnsmasq"),
    )


def _secret_parts(
    refs: Sequence[SecretRef | None],
) -> tuple[tuple[str, ...], tuple[Mount, ...]]:
    """How secrets reach a container: env names, or their files mounted read-only."""
    names: dict[str, None] = {}
    mounts: dict[Path, Mount] = {}
    for ref in refs:
        if ref is None:
            continue
        if ref.env is not None:
            names[ref.env] = None
        else:
            assert ref.file is not None
            mounts[ref.file] = Mount(ref.file, str(ref.file), read_only=True)
    return tuple(names), tuple(mounts.values())


def site_config_hash(config: SiteConfig) -> str:
    text = json.dumps(dump_config(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bootcfg_spec(
    config: SiteConfig, config_file: Path, os_version: str | None = None
) -> ContainerSpec:
    """bootcfg on the bridge network, its port published on ``bootcfg.listen``.

    Host paths are mounted at the same paths, so the site config means the same inside.
    """
    port = config.bootcfg.port
    data_dir = config.bootcfg.data_dir
    mounts = [
        Mount(config_file.absolute(), CONFIG_IN_CONTAINER, read_only=True),
        Mount(data_dir, str(data_dir)),
    ]
    state_db = config.bootcfg.state_db
    if state_db is not None and not state_db.is_relative_to(data_dir):
        mounts.append(Mount(state_db.parent, str(state_db.parent)))
    etcd_refs, etcd_mounts = _etcd_parts(config)
    mounts += etcd_mounts
    secret_env, secret_mounts = _secret_parts([config.bootcfg.token, *etcd_refs])
    command = ["--config", CONFIG_IN_CONTAINER, "bootcfg", "serve", "--listen", "0.0.0.0"]
    if os_version:
        command += ["--os-version", os_version]
    return ContainerSpec(
        name=container_name(config, "bootcfg"),
        image=image_ref(config, "bootcfg"),
        command=tuple(command),
        network=config.services.network,
        ports=_published(config, PortMap(str(config.bootcfg.listen), port, port)),
        mounts=(*mounts, *secret_mounts),
        secret_env=secret_env,
        health=_health(_wget(f"http://127.0.0.1:{port}/healthz")),
        # bootcfg reads the whole site config at start: any change restarts it
        labels=_labels(config, "bootcfg", **{LABEL_SITE: site_config_hash(config)}),
    )


def _published(config: SiteConfig, port: PortMap) -> tuple[PortMap, ...]:
    """A port published on the host, unless the services share a container's namespace
    (``services.network``), where Docker publishes nothing: the service listens there."""
    return () if config.services.network is not None else (port,)


def _etcd_parts(config: SiteConfig) -> tuple[list[SecretRef | None], list[Mount]]:
    """With ``state.backend: etcd``: its secrets (password, client key) and its CA and
    client certificate files, mounted read-only at the same paths."""
    etcd = config.state.etcd
    if config.state.backend != "etcd" or etcd is None:
        return [], []
    files = [f for f in (etcd.ca_file, etcd.cert_file) if f is not None]
    return [etcd.password, etcd.key], [Mount(f, str(f), read_only=True) for f in files]


def _registry_mounts(config: SiteConfig) -> list[Mount]:
    """The machine registry's directory (SQLite in WAL mode needs it writable)."""
    data_dir = config.bootcfg.data_dir
    state_db = config.bootcfg.state_db
    if state_db is not None and not state_db.is_relative_to(data_dir):
        return [Mount(state_db.parent, str(state_db.parent))]
    return [Mount(data_dir, str(data_dir))]


def web_spec(config: SiteConfig, config_file: Path) -> ContainerSpec:
    """The web view (kpc's bootcfg image, which holds kpc) on the host network, so its BMC
    actions reach the BMC networks as the CLI does. Reads the registry and kolla's logs."""
    web_config = config.web
    listen = str(web_config.listen or config.provisioning.address)
    mounts = [
        Mount(config_file.absolute(), CONFIG_IN_CONTAINER, read_only=True),
        *_registry_mounts(config),
        # read only in practice; writable so that `kpc up` makes it on a host without logs yet
        Mount(config.paths.log_dir, str(config.paths.log_dir)),
    ]
    if web_config.serial_logs is not None:
        mounts.append(Mount(web_config.serial_logs, str(web_config.serial_logs), read_only=True))
    etcd_refs, etcd_mounts = _etcd_parts(config)
    mounts += etcd_mounts
    refs: list[SecretRef | None] = [web_config.password, *etcd_refs]
    if web_config.actions:  # power actions log in to the BMCs
        refs += [config.bmc.password, *(host.password for host in config.bmc.hosts)]
    secret_env, secret_mounts = _secret_parts(refs)
    return ContainerSpec(
        name=container_name(config, "web"),
        image=image_ref(config, "bootcfg"),
        command=("--config", CONFIG_IN_CONTAINER, "web"),
        network=config.services.network or "host",
        mounts=(*mounts, *secret_mounts),
        secret_env=secret_env,
        health=_health(_wget(f"http://{listen}:{web_config.port}/healthz")),
        # the web view reads the whole site config at start: any change restarts it
        labels=_labels(config, "web", **{LABEL_SITE: site_config_hash(config)}),
    )


def registry_spec(config: SiteConfig) -> ContainerSpec:
    """A v2 registry on ``registry.port`` (every address unless ``registry.address``)."""
    registry = config.registry
    if registry.tls or registry.user or registry.password:
        raise ConfigError(
            "registry: tls, user and password are not supported by kpc's registry service yet",
            hint="remove them from the registry section (the registry serves plain HTTP)",
        )
    host_ip = str(registry.address) if registry.address is not None else "0.0.0.0"
    shared = config.services.network is not None
    return ContainerSpec(
        name=container_name(config, "registry"),
        image=image_ref(config, "registry"),
        network=config.services.network,
        # in a shared namespace nothing is published: the registry listens on its own port
        env=(("REGISTRY_HTTP_ADDR", f":{registry.port}"),) if shared else (),
        ports=_published(config, PortMap(host_ip, registry.port, REGISTRY_PORT)),
        mounts=(Mount(registry.storage, REGISTRY_STORAGE),),
        health=_health(_wget(f"http://127.0.0.1:{registry.port if shared else REGISTRY_PORT}/v2/")),
        labels=_labels(config, "registry"),
    )


def spec_hash(spec: ContainerSpec) -> str:
    """A digest of everything that defines the container (its own hash label aside)."""
    data: dict[str, Any] = asdict(spec)
    data["labels"] = [pair for pair in spec.labels if pair[0] != LABEL_HASH]
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_hash(spec: ContainerSpec) -> ContainerSpec:
    labels = dict(spec.labels)
    labels[LABEL_HASH] = spec_hash(spec)
    return replace(spec, labels=tuple(sorted(labels.items())))


def service_specs(
    config: SiteConfig, config_file: Path, *, os_version: str | None = None
) -> dict[str, ContainerSpec]:
    """Every enabled service's spec, hash label included, in start order (web only with
    web.enabled)."""
    specs = {
        "registry": registry_spec(config),
        "bootcfg": bootcfg_spec(config, config_file, os_version),
        "dnsmasq": dnsmasq_spec(config),
    }
    if config.web.enabled:
        specs["web"] = web_spec(config, config_file)
    return {name: with_hash(specs[name]) for name in SERVICES if name in specs}


def select_services(names: Sequence[str], enabled: Sequence[str] = SERVICES) -> list[str]:
    """The named services in start order (every enabled one when none are named)."""
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        raise UsageError(
            f"no such service: {', '.join(unknown)}", hint=f"kpc runs: {', '.join(SERVICES)}"
        )
    off = [name for name in names if name not in enabled]
    if off:
        raise UsageError(
            f"service {', '.join(off)} is not enabled in the site config",
            hint="set web.enabled: true in kpc.yaml (and a web.password) to run the web view",
        )
    return [name for name in SERVICES if name in enabled and (not names or name in names)]


def env_secrets_needed(specs: Mapping[str, ContainerSpec]) -> list[str]:
    """Environment variable names whose values the containers need (resolved by the CLI)."""
    return sorted({name for spec in specs.values() for name in spec.secret_env})
