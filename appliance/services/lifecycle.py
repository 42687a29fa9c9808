"""``kpc up``, ``down``, ``status`` and ``logs``: the service containers' lifecycle.

``up`` is idempotent: a running container whose spec hash and image are unchanged is left
alone; a changed one is recreated; a stopped one is started. Then it waits until every
service it touched is healthy, or names the one that is not, with its last log lines.
``down`` removes the containers and keeps the data directories; ``purge`` deletes those too.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.config import SiteConfig
from appliance.drivers.docker import ContainerInfo, ContainerSpec, Docker, PortInUse
from appliance.errors import ConfigError, DockerError, UsageError
from appliance.services import health
from appliance.services.spec import (
    LABEL_HASH,
    LABEL_PREFIX,
    LABEL_SERVICE,
    PORT_KEYS,
    SERVICES,
    select_services,
)


@dataclass(frozen=True)
class Action:
    service: str
    container: str
    verb: str  # create, recreate, start, keep
    reason: str


def plan_up(
    specs: Mapping[str, ContainerSpec],
    current: Mapping[str, ContainerInfo | None],
    image_ids: Mapping[str, str],
) -> list[Action]:
    """What ``up`` does to each service (pure).

    A container with the service's name that kpc did not make is never touched.
    """
    actions = []
    for service, spec in specs.items():
        info = current.get(service)
        if info is not None and info.labels.get(LABEL_SERVICE) != service:
            raise DockerError(
                f"a container named {spec.name} exists, but kpc did not create it",
                hint=f"remove or rename it (docker rm -f {spec.name}), or choose another "
                "services.prefix in the site config",
            )
        if info is None:
            verb, reason = "create", "not there yet"
        elif info.labels.get(LABEL_HASH) != dict(spec.labels).get(LABEL_HASH):
            verb, reason = "recreate", "its configuration changed"
        elif info.image_id != image_ids.get(spec.image):
            verb, reason = "recreate", f"{spec.image} was rebuilt"
        elif not info.running and not info.restarting:
            verb, reason = "start", f"it was {info.status}"
        else:
            verb, reason = "keep", "running and unchanged"
        actions.append(Action(service, spec.name, verb, reason))
    return actions


def _missing_images(docker: Docker, specs: Mapping[str, ContainerSpec]) -> dict[str, str]:
    """Image ID per image reference; DockerError naming every missing image."""
    ids: dict[str, str] = {}
    missing: list[str] = []
    for service, spec in specs.items():
        info = docker.image(spec.image)
        if info is None:
            missing.append(service)
        else:
            ids[spec.image] = info.id
    if missing:
        refs = ", ".join(specs[s].image for s in missing)
        raise DockerError(
            f"image{'s' if len(missing) > 1 else ''} not built yet: {refs}",
            hint=f"build {'them' if len(missing) > 1 else 'it'}: kpc images build "
            + " ".join(missing)
            + " (or load a bundle made by kpc images save: kpc images load BUNDLE)",
        )
    return ids


def _prepare_mounts(spec: ContainerSpec) -> None:
    """Create missing data directories; a mounted file must already exist."""
    for mount in spec.mounts:
        if mount.read_only:
            if not mount.source.exists():
                raise UsageError(f"{spec.name} needs {mount.source}, which does not exist")
            continue
        mount.source.mkdir(parents=True, exist_ok=True)


def _start(
    service: str,
    spec: ContainerSpec,
    docker: Docker,
    secrets: Mapping[str, str],
) -> None:
    _prepare_mounts(spec)
    try:
        docker.run(spec, {name: secrets[name] for name in spec.secret_env if name in secrets})
    except PortInUse as exc:
        key = PORT_KEYS.get(service)
        raise DockerError(
            f"service {service} cannot start: port {exc.port} on {exc.address} is already in use",
            hint=f"see what holds it with: ss -ltnup 'sport = :{exc.port}'; stop it"
            + (f", or choose another {key} in the site config" if key else ""),
        ) from None


def up(
    config: SiteConfig,
    docker: Docker,
    specs: Mapping[str, ContainerSpec],
    names: Sequence[str] = (),
    *,
    secrets: Mapping[str, str] | None = None,
    on_action: Callable[[Action], None] = lambda _a: None,
    on_ready: Callable[[str, float], None] = lambda _s, _t: None,
) -> list[Action]:
    """Bring the named services (default: all) to their spec and wait until they are healthy."""
    docker.ping()
    chosen = {service: specs[service] for service in select_services(names, tuple(specs))}
    image_ids = _missing_images(docker, chosen)
    current = {service: docker.container(spec.name) for service, spec in chosen.items()}
    actions = plan_up(chosen, current, image_ids)
    for action in actions:
        on_action(action)
        spec = chosen[action.service]
        if action.verb == "recreate":
            docker.remove(spec.name)
        if action.verb in ("create", "recreate"):
            _start(action.service, spec, docker, secrets or {})
        elif action.verb == "start":
            docker.start(spec.name)
    health.wait_ready(docker, chosen, config.services.health_timeout, on_ready=on_ready)
    return actions


# --- down ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownPlan:
    containers: list[str]
    data_dirs: list[Path]  # deleted only with purge


def data_dirs(config: SiteConfig) -> list[Path]:
    """The service data kept by ``down`` and deleted by ``down --purge``."""
    paths = [config.bootcfg.data_dir, config.registry.storage]
    state_db = config.bootcfg.state_db
    if state_db is not None and not state_db.is_relative_to(config.bootcfg.data_dir):
        paths.append(state_db)
    return paths


def plan_down(config: SiteConfig, docker: Docker, *, purge: bool) -> DownPlan:
    docker.ping()
    prefix = config.services.prefix
    found = {info.name for info in docker.containers({LABEL_PREFIX: prefix})}
    ordered = [f"{prefix}-{service}" for service in reversed(SERVICES)]
    containers = [name for name in ordered if name in found]
    containers += sorted(found - set(containers))
    dirs = [path for path in data_dirs(config) if path.exists()] if purge else []
    return DownPlan(containers, dirs)


# never purged, whatever the config says (a typo must not wipe a system directory)
SYSTEM_DIRS = frozenset(
    Path(p)
    for p in ("/var/lib", "/var/cache", "/var/log", "/var/tmp", "/usr/local", "/usr/share",
              "/home", "/root", "/srv", "/opt", "/mnt", "/media", "/etc", "/tmp", "/run")
)  # fmt: skip


def check_purgeable(path: Path) -> None:
    resolved = path.resolve()
    if len(resolved.parts) < 3 or resolved in SYSTEM_DIRS or resolved == Path.home():
        raise UsageError(
            f"refusing to purge {path}: it is not a kpc data directory",
            hint="point bootcfg.data_dir / registry.storage at kpc's own directories",
        )


def purge_data(path: Path) -> None:
    """Delete ``path``; if it is a mount point, empty it and keep the directory."""
    check_purgeable(path)
    if path.is_file() or path.is_symlink():
        path.unlink()
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()
    if path.exists() and any(path.iterdir()):
        raise OSError(errno.ENOTEMPTY, f"could not empty {path}")


def down(
    docker: Docker, plan: DownPlan, *, on_step: Callable[[str], None] = lambda _s: None
) -> None:
    for name in plan.containers:
        on_step(f"remove container {name}")
        docker.remove(name)
    for path in plan.data_dirs:
        on_step(f"delete {path}")
        purge_data(path)


# --- status and logs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    container: str
    state: str  # missing, running, restarting, exited, created, ...
    health: str | None
    image: str
    ports: list[str]
    started_at: datetime | None
    uptime_seconds: float | None
    restarts: int
    problem: str | None
    outdated: bool  # its spec changed since it was created: 'kpc up' recreates it
    log_tail: list[str]


def status(
    docker: Docker,
    specs: Mapping[str, ContainerSpec],
    *,
    now: datetime | None = None,
    log_lines: int = 5,
) -> list[ServiceStatus]:
    docker.ping()
    moment = now or datetime.now(UTC)
    result = []
    for service, spec in specs.items():
        info = docker.container(spec.name)
        problem = health.judge(info)
        if info is None:
            result.append(
                ServiceStatus(
                    service,
                    spec.name,
                    "missing",
                    None,
                    spec.image,
                    [],
                    None,
                    None,
                    0,
                    problem,
                    False,
                    [],
                )
            )
            continue
        running = info.running and info.started_at is not None
        uptime = (moment - info.started_at).total_seconds() if running and info.started_at else None
        tail = health.log_tail(docker, spec.name, log_lines) if problem else []
        state = "restarting" if info.restarting else info.status
        result.append(
            ServiceStatus(
                service=service,
                container=spec.name,
                state=state,
                health=info.health,
                image=info.image,
                ports=list(info.ports) or (["host-network"] if info.network == "host" else []),
                started_at=info.started_at,
                uptime_seconds=uptime,
                restarts=info.restart_count,
                problem=problem,
                outdated=info.labels.get(LABEL_HASH) != dict(spec.labels).get(LABEL_HASH),
                log_tail=tail,
            )
        )
    return result


def logs(
    docker: Docker,
    specs: Mapping[str, ContainerSpec],
    service: str,
    *,
    follow: bool,
    tail: int,
    on_line: Callable[[str], None],
) -> None:
    select_services([service], tuple(specs))
    name = specs[service].name
    docker.ping()
    if docker.container(name) is None:
        raise DockerError(f"service {service} has no container ({name})", hint="start it: kpc up")
    if follow:
        docker.follow_logs(name, on_line, tail=tail)
        return
    for line in docker.logs(name, tail=tail):
        on_line(line)


def bootcfg_os_version(config: SiteConfig) -> str | None:
    """For ``os.version: host``, the version as this host sees it (the container cannot).

    None when it cannot be told here; bootcfg then decides (and says why it cannot).
    """
    if config.os.version != "host":
        return None
    from appliance.bootcfg.setup import resolve_os_version

    try:
        return resolve_os_version(config, None, config.bootcfg.data_dir)
    except ConfigError:
        return None
