"""The Docker engine driver: the only module that imports python-on-whales.

Everything kpc asks of the engine goes through :class:`Docker`; its errors come back as kpc's
:class:`~appliance.errors.DockerError` (or a subclass below) with a hint that says what to do.
python-on-whales is imported lazily (it costs ~0.3 s), so commands that never touch Docker
stay fast.

Builds use BuildKit, because only BuildKit has build secrets (the CA bundle must never land
in a layer). The client side of BuildKit is either the buildx plugin (Docker 23+ clients) or
built into the Docker 20.10 client (``DOCKER_BUILDKIT=1``); :meth:`Docker.builder` picks the
first client that can do it. Streaming commands (``build``, ``logs --follow``) run through
``drivers.process.stream`` with the argv python-on-whales resolves, so an interrupted command
is terminated and waited for.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from appliance.drivers import process
from appliance.errors import CommandFailed, DockerError, ToolMissing

if TYPE_CHECKING:
    from python_on_whales import DockerClient

DEFAULT_HOST = "unix:///var/run/docker.sock"
START_HINT = (
    "start the Docker engine: 'systemctl start docker' (or 'dockerd &' on a host without "
    "systemd), then check it with 'docker info'; if DOCKER_HOST is set, it must point at a "
    "running engine"
)
BUILDER_CANDIDATES = ("docker", "/usr/bin/docker")


# --- what callers hand to the driver (pure data) ----------------------------------------


@dataclass(frozen=True)
class PortMap:
    """Publish ``host_ip:host_port`` to ``container_port`` (bridge network only)."""

    host_ip: str
    host_port: int
    container_port: int
    protocol: str = "tcp"

    def publish_arg(self) -> str:
        return f"{self.host_ip}:{self.host_port}:{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path."""

    source: Path
    target: str
    read_only: bool = False

    def volume_arg(self) -> str:
        return f"{self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True)
class Healthcheck:
    """A shell command run inside the container; times in seconds."""

    command: str
    interval: int = 10
    timeout: int = 5
    retries: int = 3
    start_period: int = 30


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one long-running container."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    network: str | None = None  # "host", or None for the default bridge
    cap_add: tuple[str, ...] = ()
    ports: tuple[PortMap, ...] = ()
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    secret_env: tuple[str, ...] = ()  # names only; values are passed to run() separately
    health: Healthcheck | None = None
    restart: str = "unless-stopped"
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BuildRequest:
    context: Path
    dockerfile: Path
    tag: str
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Path] = field(default_factory=dict)  # id -> file
    no_cache: bool = False


# --- what the driver reports back --------------------------------------------------------


@dataclass(frozen=True)
class ImageInfo:
    id: str
    tags: tuple[str, ...]
    created: datetime | None
    size: int
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    id: str
    image_id: str
    image: str  # the reference it was created from
    status: str  # created, running, restarting, exited, paused, dead
    running: bool
    restarting: bool
    exit_code: int | None
    restart_count: int
    health: str | None  # starting, healthy, unhealthy; None without a health check
    health_output: str | None
    started_at: datetime | None
    labels: Mapping[str, str]
    ports: tuple[str, ...]
    network: str | None


# --- errors --------------------------------------------------------------------------------


class EngineUnreachable(DockerError):
    """The Docker engine does not answer."""


class PortInUse(DockerError):
    def __init__(self, message: str, hint: str, port: int, address: str) -> None:
        super().__init__(message, hint)
        self.port = port
        self.address = address


class ImageMissing(DockerError):
    """A container was asked to start from an image that is not there."""


class BuildFailed(DockerError):
    def __init__(self, message: str, lines: list[str]) -> None:
        super().__init__(message)
        self.lines = lines


_PORT_RE = re.compile(r"(?:Bind for|listen tcp[46]?|listen udp[46]?) \[?([0-9a-fA-F.:]*?)\]?:(\d+)")
_UNREACHABLE = (
    "Cannot connect to the Docker daemon",
    "Is the docker daemon running",
    "error during connect",
    "connect: connection refused",
    "dial unix",
)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def translate(stderr: str, doing: str, where: str) -> DockerError:
    """A DockerError for a failed docker command, from its stderr (pure; tested directly)."""
    text = stderr.strip()
    if "permission denied" in text and "docker" in text and ".sock" in text:
        return EngineUnreachable(
            f"not allowed to use the Docker engine at {where} while {doing}",
            hint="run kpc as root (or as a member of the docker group)",
        )
    if any(marker in text for marker in _UNREACHABLE):
        return EngineUnreachable(
            f"cannot reach the Docker engine at {where} while {doing}", hint=START_HINT
        )
    match = _PORT_RE.search(text)
    if match and ("already allocated" in text or "address already in use" in text):
        address, port = match.group(1) or "0.0.0.0", int(match.group(2))
        return PortInUse(
            f"port {port} on {address} is already in use ({doing})",
            hint=f"see what holds it with: ss -ltnup 'sport = :{port}'",
            port=port,
            address=address,
        )
    if (
        "Unable to find image" in text
        or "No such image" in text
        or "pull access denied" in text
        or "repository does not exist" in text
    ):
        return ImageMissing(
            f"a Docker image is missing ({doing}): {_last_line(text)}",
            hint="build kpc's images first: kpc images build",
        )
    return DockerError(f"docker failed while {doing}: {_last_line(text) or 'no output'}")


# --- the driver ----------------------------------------------------------------------------


class Docker:
    """One Docker engine, addressed like the docker CLI (``DOCKER_HOST`` in ``environ``)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = dict(environ)
        self.host = self._environ.get("DOCKER_HOST") or None
        self._client_obj: DockerClient | None = None
        self._builder: list[str] | None = None

    @property
    def where(self) -> str:
        return self.host or DEFAULT_HOST

    @property
    def _client(self) -> DockerClient:
        if self._client_obj is None:
            from python_on_whales import DockerClient

            self._client_obj = DockerClient(host=self.host)
        return self._client_obj

    def _fail(self, exc: Exception, doing: str) -> DockerError | ToolMissing:
        from python_on_whales import ClientNotFoundError
        from python_on_whales.exceptions import DockerException

        if isinstance(exc, ClientNotFoundError):
            return ToolMissing("docker", "docker.io")
        if isinstance(exc, DockerException):
            return translate(exc.stderr or exc.stdout or "", doing, self.where)
        return DockerError(f"docker failed while {doing}: {exc}")

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        from python_on_whales import ClientNotFoundError
        from python_on_whales.exceptions import DockerException

        try:
            return fn()
        except (DockerException, ClientNotFoundError) as exc:
            raise self._fail(exc, doing) from None

    def docker_cmd(self) -> list[str]:
        """The docker client argv prefix (binary and --host), as python-on-whales resolves it."""
        from python_on_whales import ClientNotFoundError

        try:
            return [str(part) for part in self._client.client_config.docker_cmd]
        except ClientNotFoundError:
            raise ToolMissing("docker", "docker.io") from None

    # engine --------------------------------------------------------------------------------

    def ping(self) -> str:
        """The engine's version, or EngineUnreachable with how to start it."""
        version = self._call("asking for its version", lambda: self._client.version())
        server = getattr(version, "server", None)
        if server is None or not getattr(server, "version", None):
            raise EngineUnreachable(
                f"cannot reach the Docker engine at {self.where}", hint=START_HINT
            )
        return str(server.version)

    # images -------------------------------------------------------------------------------

    def image(self, ref: str) -> ImageInfo | None:
        """The image ``ref`` (a tag or an ID), or None when it is not there."""
        from python_on_whales.exceptions import NoSuchImage

        try:
            img = self._client.image.inspect(ref)
        except NoSuchImage:
            return None
        except Exception as exc:
            raise self._fail(exc, f"inspecting image {ref}") from None
        config = getattr(img, "config", None)
        return ImageInfo(
            id=str(img.id),
            tags=tuple(img.repo_tags or ()),
            created=img.created,
            size=int(img.size or 0),
            labels=dict(getattr(config, "labels", None) or {}),
        )

    def import_rootfs(self, tarball: Path, ref: str, changes: Sequence[str] = ()) -> str:
        img = self._call(
            f"importing {tarball} as {ref}",
            lambda: self._client.image.import_(tarball, tag=ref, changes=list(changes)),
        )
        return str(img.id)

    def remove_unused_image(self, image_id: str) -> bool:
        """Remove an image nothing uses any more; False when a container or tag still does."""
        from python_on_whales.exceptions import DockerException

        try:
            self._client.image.remove(image_id, force=False, prune=True)
        except DockerException as exc:
            problem = translate(exc.stderr or "", f"removing image {image_id}", self.where)
            if isinstance(problem, EngineUnreachable):
                raise problem from None
            return False
        return True

    def images_named(self, reference: str) -> list[ImageInfo]:
        """Every image with a tag matching ``reference`` (docker's ``reference`` filter:
        ``repo:tag`` with ``*`` wildcards), newest first."""
        found = self._call(
            f"listing images named {reference}",
            lambda: self._client.image.list(filters=[("reference", reference)]),
        )
        infos = [self.image(str(img.id)) for img in found]
        listed = [info for info in infos if info is not None]
        return sorted(listed, key=lambda i: i.created or datetime.min, reverse=True)

    def save(self, refs: Sequence[str], output: Path) -> None:
        """``docker save`` of ``refs`` into one archive (layers they share are stored once)."""
        try:
            process.run_to_file([*self.docker_cmd(), "save", *refs], output)
        except CommandFailed as exc:
            raise translate(exc.output, f"saving {len(refs)} image(s)", self.where) from None

    def load(self, source: IO[bytes]) -> list[str]:
        """``docker load`` of an archive streamed from ``source``; the names it loaded."""
        try:
            result = process.feed([*self.docker_cmd(), "load"], source)
        except CommandFailed as exc:
            raise translate(exc.output, "loading images", self.where) from None
        return [
            line.split(": ", 1)[1].strip()
            for line in result.stdout.splitlines()
            if line.startswith(("Loaded image: ", "Loaded image ID: "))
        ]

    def tag(self, source: str, target: str) -> None:
        self._call(f"tagging {source} as {target}", lambda: self._client.image.tag(source, target))

    def untag(self, ref: str) -> None:
        """Remove the tag ``ref`` (the image stays while other tags name it)."""
        self._call(f"removing tag {ref}", lambda: self._client.image.remove(ref, prune=False))

    def push(self, ref: str, on_line: Callable[[str], None]) -> None:
        """Push ``ref`` to its registry, streaming the client's progress lines."""
        lines: list[str] = []

        def keep(line: str) -> None:
            lines.append(line)
            del lines[:-20]
            on_line(line)

        code = process.stream([*self.docker_cmd(), "push", ref], keep, check=False)
        if code != 0:
            raise translate("\n".join(lines), f"pushing {ref}", self.where)

    def builder(self) -> list[str]:
        """A docker client argv that can run BuildKit builds with secrets."""
        if self._builder is not None:
            return self._builder
        env = {**self._environ, "DOCKER_BUILDKIT": "1"}
        tried = []
        for candidate in BUILDER_CANDIDATES:
            try:
                path = process.which(candidate, "docker.io")
            except ToolMissing:
                continue
            if path in tried:
                continue
            tried.append(path)
            probe = process.run([path, "build", "--help"], env=env, check=False, timeout=30)
            if probe.returncode == 0 and "--secret" in probe.stdout:
                self._builder = [path, *(["--host", self.host] if self.host else [])]
                return self._builder
        raise DockerError(
            "no Docker client here can build with BuildKit (tried: "
            + (", ".join(tried) or "none found")
            + ")",
            hint="install the buildx plugin for your Docker client, or Debian's docker.io "
            "package (its /usr/bin/docker has BuildKit built in)",
        )

    def build(self, request: BuildRequest, on_line: Callable[[str], None]) -> str:
        """Build with BuildKit (plain progress to ``on_line``); return the image ID."""
        argv = [*self.builder(), "build", "--progress=plain"]
        argv += ["--file", str(request.dockerfile), "--tag", request.tag]
        for key, value in sorted(request.build_args.items()):
            argv += ["--build-arg", f"{key}={value}"]
        for key, value in sorted(request.labels.items()):
            argv += ["--label", f"{key}={value}"]
        for secret_id, path in sorted(request.secrets.items()):
            argv += ["--secret", f"id={secret_id},src={path}"]
        if request.no_cache:
            argv.append("--no-cache")
        lines: list[str] = []

        def collect(line: str) -> None:
            lines.append(line)
            on_line(line)

        with tempfile.TemporaryDirectory(prefix="kpc-build-") as tmp:
            iidfile = Path(tmp) / "iid"
            argv += ["--iidfile", str(iidfile), str(request.context)]
            env = {**self._environ, "DOCKER_BUILDKIT": "1"}
            code = process.stream(argv, collect, env=env, check=False)
            if code != 0:
                problem = translate("\n".join(lines[-5:]), f"building {request.tag}", self.where)
                if isinstance(problem, EngineUnreachable):
                    raise problem
                raise BuildFailed(f"building {request.tag} failed (exit code {code})", lines)
            return iidfile.read_text(encoding="utf-8").strip()

    # containers ---------------------------------------------------------------------------

    def _info(self, c: Any) -> ContainerInfo:
        state = c.state
        health = getattr(state, "health", None)
        health_log = getattr(health, "log", None) or []
        ports: list[str] = []
        for container_port, bindings in sorted((c.network_settings.ports or {}).items()):
            for binding in bindings or []:
                ports.append(f"{binding['HostIp']}:{binding['HostPort']}->{container_port}")
        network_mode = getattr(c.host_config, "network_mode", None)
        return ContainerInfo(
            name=str(c.name).lstrip("/"),
            id=str(c.id),
            image_id=str(c.image),
            image=str(c.config.image),
            status=str(state.status),
            running=bool(state.running),
            restarting=bool(state.restarting),
            exit_code=state.exit_code,
            restart_count=int(c.restart_count or 0),
            health=getattr(health, "status", None),
            health_output=(health_log[-1].output if health_log else None),
            started_at=state.started_at,
            labels=dict(c.config.labels or {}),
            ports=tuple(ports),
            network=str(network_mode) if network_mode else None,
        )

    def _inspect(self, name: str) -> Any:
        """The container's inspect record, or None when there is no such container."""
        from python_on_whales.exceptions import NoSuchContainer

        try:
            return self._client.container.inspect(name)
        except NoSuchContainer:
            return None
        except Exception as exc:
            raise self._fail(exc, f"inspecting container {name}") from None

    def container(self, name: str) -> ContainerInfo | None:
        found = self._inspect(name)
        return None if found is None else self._info(found)

    def container_pid(self, name: str) -> int | None:
        """The host pid of a running container's first process (None when not running)."""
        found = self._inspect(name)
        if found is None or not found.state.running or not found.state.pid:
            return None
        return int(found.state.pid)

    def containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        filters: list[tuple[Literal["label"], str]] = [
            ("label", f"{key}={value}") for key, value in sorted(labels.items())
        ]
        found = self._call(
            "listing containers", lambda: self._client.container.list(all=True, filters=filters)
        )
        return [self._info(c) for c in found]

    def run(self, spec: ContainerSpec, secrets: Mapping[str, str] | None = None) -> None:
        """Create and start a detached container. A failed start leaves nothing behind."""
        secrets = dict(secrets or {})
        missing = [name for name in spec.secret_env if name not in secrets]
        if missing:
            raise DockerError(f"no value for secret(s) {', '.join(missing)} of {spec.name}")
        health = spec.health
        with tempfile.TemporaryDirectory(prefix="kpc-run-") as tmp:
            env_files: list[Path] = []
            if spec.secret_env:
                env_file = Path(tmp) / "secrets.env"
                env_file.touch(mode=0o600)
                env_file.write_text(
                    "".join(f"{name}={secrets[name]}\n" for name in spec.secret_env),
                    encoding="utf-8",
                )
                env_files.append(env_file)
            kwargs: dict[str, Any] = {
                "detach": True,
                "name": spec.name,
                "cap_add": list(spec.cap_add),
                "networks": [spec.network] if spec.network else [],
                "publish": [
                    (f"{p.host_ip}:{p.host_port}", p.container_port, p.protocol) for p in spec.ports
                ],
                "volumes": [
                    (m.source, m.target, "ro" if m.read_only else "rw") for m in spec.mounts
                ],
                "envs": dict(spec.env),
                "env_files": env_files,
                "labels": dict(spec.labels),
                "restart": spec.restart,
            }
            if health is not None:
                kwargs.update(
                    health_cmd=health.command,
                    health_interval=timedelta(seconds=health.interval),
                    health_timeout=timedelta(seconds=health.timeout),
                    health_retries=health.retries,
                    health_start_period=timedelta(seconds=health.start_period),
                )
            try:
                self._call(
                    f"starting container {spec.name} from {spec.image}",
                    lambda: self._client.container.run(spec.image, list(spec.command), **kwargs),
                )
            except DockerError:
                self._remove_quietly(spec.name)
                raise

    def _remove_quietly(self, name: str) -> None:
        with contextlib.suppress(Exception):  # best effort: it may never have been created
            self._client.container.remove(name, force=True)

    def start(self, name: str) -> None:
        self._call(f"starting container {name}", lambda: self._client.container.start(name))

    def remove(self, name: str, timeout: int = 10) -> None:
        """Stop (SIGTERM, then SIGKILL after ``timeout`` s) and remove a container."""
        from python_on_whales.exceptions import NoSuchContainer

        try:
            self._client.container.stop(name, time=timeout)
            self._client.container.remove(name, force=True)
        except NoSuchContainer:
            return
        except Exception as exc:
            raise self._fail(exc, f"removing container {name}") from None

    def exec_ok(self, name: str, command: str, timeout: int) -> bool:
        """True when ``sh -c command`` exits 0 inside the running container.

        Bounded on both sides: ``timeout`` inside the container, and a deadline on the
        ``docker exec`` client (which can block while a container is dying or restarting).
        """
        argv = [*self.docker_cmd(), "exec", name, "timeout", str(timeout), "sh", "-c", command]
        try:
            done = process.run(argv, check=False, env=self._environ, timeout=timeout + 2)
        except CommandFailed:  # the client's deadline passed
            return False
        if done.returncode == 0:
            return True
        problem = translate(done.stderr, f"checking {name}", self.where)
        if isinstance(problem, EngineUnreachable):
            raise problem
        return False

    def logs(self, name: str, tail: int = 20) -> list[str]:
        text = self._call(
            f"reading the logs of {name}", lambda: self._client.container.logs(name, tail=tail)
        )
        return [line for line in str(text).splitlines()]

    def follow_logs(self, name: str, on_line: Callable[[str], None], tail: int = 50) -> int:
        """Stream a container's logs until it stops or the caller is interrupted."""
        argv = [*self.docker_cmd(), "logs", "--follow", "--tail", str(tail), name]
        try:
            return process.stream(argv, on_line, env=self._environ, check=True)
        except CommandFailed as exc:
            raise translate(exc.output, f"following the logs of {name}", self.where) from None
