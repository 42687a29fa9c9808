"""``kpc kolla images build``: the release's Kolla images, with kolla's own builder, offline.

Steps: check kpc's base image of the release's suite and the kolla_builder image; hash the
inputs (``recipe``); write the build directory ``paths.state_dir/kolla-build/<hash>``; make
the source base (kpc's base plus the CA bundle pip needs, a public file: kolla's builds run
through docker-py, which has no build secrets); in the builder container: download the
service sdists from PyPI, resolve the upper constraints once per hash, run kolla-build
(``--skip-existing`` under the hash's namespace: a second run rebuilds nothing); then tag
and push each image to the deploy host's registry as kolla-ansible pulls it.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from appliance.config import SiteConfig
from appliance.drivers.docker import BuildRequest, Docker, Mount
from appliance.drivers.forward import loopback_forward
from appliance.errors import DockerError, KpcError
from appliance.images.build import SYSTEM_CA_BUNDLE, write_ca_bundle
from appliance.images.catalog import image_ref
from appliance.kolla import buildout, deployer, recipe
from appliance.kolla.imagesets import (
    ImageSets,
    choose,
    image_sets,
    needs_python,
    source_sections,
)
from appliance.kolla.mirror import image_tag
from appliance.kolla.release import Release, release
from appliance.resources import resource_dir

DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_PIP_INDEX = "https://pypi.org/simple"


class Progress(Protocol):
    def phase(self, text: str) -> None: ...

    def event(self, event: buildout.Event) -> None: ...

    def line(self, line: str) -> None: ...


@dataclass(frozen=True)
class ImageResult:
    name: str
    status: str  # built | cached | failed | not built
    seconds: float | None
    log: Path | None
    pushed: str | None = None
    why: str = ""


@dataclass(frozen=True)
class BuildReport:
    digest: str
    namespace: str
    tag: str
    workdir: Path
    images: tuple[ImageResult, ...]
    unbuildable: dict[str, str]  # image -> why (the release's list, for the chosen set)
    seconds: float

    @property
    def failed(self) -> list[ImageResult]:
        return [i for i in self.images if i.status in ("failed", "not built")]


class ImagesFailed(KpcError):
    def __init__(self, report: BuildReport) -> None:
        lines = [f"{i.name}: {i.why}" for i in report.failed]
        super().__init__(
            f"{len(report.failed)} Kolla image(s) failed to build:\n  " + "\n  ".join(lines),
            hint="fix the cause shown (each image's full log is named above), then run "
            "'kpc kolla images build' again: what was built is kept",
        )
        self.report = report


def target_ref(config: SiteConfig, name: str) -> str:
    """The image as kolla-ansible pulls it on the nodes."""
    where = f"{config.registry_address}:{config.registry.port}"
    return f"{where}/{config.kolla.upstream_namespace}/{name}:{image_tag(config)}"


def push_images(
    config: SiteConfig, docker: Docker, local: Mapping[str, str], progress: Progress
) -> dict[str, str]:
    """Push each local image (name -> local ref) to the deploy host's registry.

    The engine speaks plain HTTP only to loopback registries, so the push goes through a
    loopback port forwarded to the registry; the repository path is what the nodes pull.
    """
    pushed = {}
    path = config.kolla.upstream_namespace
    with loopback_forward(str(config.registry_address), config.registry.port) as port:
        for name, ref in local.items():
            target = target_ref(config, name)
            progress.phase(f"push {name} -> {target}")
            via = f"127.0.0.1:{port}/{path}/{name}:{image_tag(config)}"
            docker.tag(ref, via)
            try:
                docker.push(via, progress.line)
            finally:
                docker.untag(via)
            pushed[name] = target
    return pushed


def pip_index(config: SiteConfig) -> str:
    return config.images.pypi_index or DEFAULT_PIP_INDEX


def inputs_files(workdir: Path) -> dict[str, bytes]:
    """What the constraints are resolved with: kpc's resolver and the CA bundle."""
    return {
        "kpc_constraints.py": (workdir / "recipe" / "kpc_constraints.py").read_bytes(),
        "ca.pem": (workdir / "ca.pem").read_bytes(),
    }


def _static_files(config: SiteConfig) -> dict[str, bytes]:
    folder = resource_dir("kolla", config.paths.source_dir) / "build"
    names = (*recipe.STATIC_FILES, recipe.HEALTHCHECK)
    return {name: (folder / name).read_bytes() for name in names}


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(raw)
    path.chmod(mode)


def _require(docker: Docker, ref: str, hint: str) -> str:
    info = docker.image(ref)
    if info is None:
        raise DockerError(f"the image {ref} is not there", hint=hint)
    return info.id


@dataclass
class _Run:
    """One builder container run's settings."""

    config: SiteConfig
    docker: Docker
    builder: str
    workdir: Path
    progress: Progress

    def __call__(self, what: str, argv: Sequence[str], on_line: Callable[[str], None]) -> None:
        call = deployer.Call(
            image=self.builder,
            name=f"{self.config.services.prefix}-kolla-build",
            argv=tuple(argv),
            mounts=(
                Mount(self.workdir, recipe.MOUNT),
                Mount(Path(DOCKER_SOCKET), DOCKER_SOCKET),
            ),
            env=(("PIP_CERT", f"{recipe.MOUNT}/ca.pem"),),
            network="host",
            workdir=recipe.MOUNT,
        )
        tail: list[str] = []

        def keep(line: str) -> None:
            tail.append(line)
            del tail[:-12]
            on_line(line)

        code = deployer.stream(self.docker, call, keep)
        if code != 0:
            raise KpcError(
                f"{what} failed in the builder container (exit code {code}):\n  "
                + "\n  ".join(tail),
                hint="check images.debian_mirror, images.pypi_index and images.ca_bundle in "
                "the site config (--verbose shows every line)",
            )


def _source_base(docker: Docker, config: SiteConfig, base: str, digest: str, workdir: Path) -> str:
    """kpc's base plus the build CA bundle at /etc/ssl/ (kolla's pip uses it: PIP_CERT)."""
    ref = f"{config.images.prefix}/kolla-source-base:{digest[:12]}"
    if docker.image(ref) is not None:
        return ref
    context = workdir / "source-base"
    _write(context / recipe.CA_FILE, (workdir / "ca.pem").read_bytes())
    _write(
        context / "Dockerfile",
        f"FROM {base}\nCOPY {recipe.CA_FILE} /etc/ssl/{recipe.CA_FILE}\n",
    )
    docker.build(BuildRequest(context, context / "Dockerfile", ref), lambda _line: None)
    return ref


def prepare(
    config: SiteConfig,
    docker: Docker,
    kolla: Release,
    sets: ImageSets,
    *,
    system_ca: Path,
) -> tuple[str, Path, str]:
    """Check the prerequisites, hash the inputs, write the build directory."""
    docker.ping()
    base = config.images.base_for(kolla.debian_suite)
    base_id = _require(
        docker, base, f"make it first (no registry needed): kpc images base --suite "
        f"{kolla.debian_suite}"
    )  # fmt: skip
    builder = image_ref(config, "kolla_builder")
    _require(docker, builder, "build it first: kpc images build kolla_builder")
    files = _static_files(config)
    with tempfile.TemporaryDirectory() as tmp:
        ca = write_ca_bundle(Path(tmp) / "ca.pem", system_ca, config.images.ca_bundle)
        files["ca.pem"] = ca.read_bytes()
    inputs = recipe.Inputs(
        kolla, sets, base_id, config.images.debian_mirror, pip_index(config), files
    )
    digest = inputs.digest()
    workdir = config.paths.state_dir / "kolla-build" / digest[:12]
    rdir = workdir / "recipe"
    template = files["template-overrides.j2"].decode()
    _write(
        rdir / "template-overrides.j2",
        recipe.overrides(template, config.images.debian_mirror, kolla.debian_suite),
    )
    _write(rdir / "repos.yaml", recipe.repos_yaml())
    for name in ("kpc_collections.py", "kpc_constraints.py"):
        _write(rdir / name, files[name])
    # kolla-toolbox installs its collections with kpc_collections.py from the constraints
    # folder: the one source kolla ADDs into that image.
    _write(workdir / "src" / "requirements" / "kpc_collections.py", files["kpc_collections.py"])
    _write(rdir / "mariadb-docker" / recipe.HEALTHCHECK, files[recipe.HEALTHCHECK], 0o755)
    _write(workdir / "ca.pem", files["ca.pem"])
    return digest, workdir, base


def build(
    config: SiteConfig,
    docker: Docker,
    names: Sequence[str],
    set_name: str | None,
    progress: Progress,
    *,
    push: bool = True,
    no_cache: bool = False,
    threads: int | None = None,
    now: datetime | None = None,
    system_ca: Path = SYSTEM_CA_BUNDLE,
) -> BuildReport:
    began = time.monotonic()
    kolla = release(config.kolla.release)
    sets = image_sets(config.kolla.release)
    chosen = choose(sets, names, set_name, default=config.kolla.services)
    progress.phase(f"kolla {kolla.kolla}, OpenStack {kolla.series}: {', '.join(chosen)}")
    digest, workdir, base = prepare(config, docker, kolla, sets, system_ca=system_ca)
    namespace = recipe.namespace(config.images.prefix, digest)
    progress.phase(f"inputs hashed: {digest[:12]} (build directory {workdir})")
    run = _Run(config, docker, image_ref(config, "kolla_builder"), workdir, progress)

    local = {name: f"{namespace}/{name}:{kolla.tag()}" for name in chosen}
    if not no_cache and all(docker.image(ref) is not None for ref in local.values()):
        progress.phase("every image is already built from these inputs: nothing to build")
        cached = tuple(ImageResult(name, "cached", None, None) for name in chosen)
        return _finish(config, docker, sets, digest, namespace, workdir, cached, local, push,
                       progress, began)  # fmt: skip
    source_base = _source_base(docker, config, base, digest, workdir)
    # The sdists and the constraints do not depend on the base or the mirror: they are kept
    # beside the build directories (by requirement, and by what they were resolved from),
    # so a new base or mirror does not download or resolve them again.
    shared = workdir.parent
    # One resolution for every image of the release's core set, whatever this run builds:
    # the constraints go into openstack-base, which every OpenStack image is built on, so a
    # minimal build and a later core build share it.
    wanted = [*sets.minimal, *sets.core] if needs_python(chosen) else []
    sections = source_sections(sets, wanted)
    for section, requirement in sections.items():
        kept = shared / "sdists" / f"{requirement}.tar.gz"
        target = workdir / "src" / f"{section}.tar.gz"
        if kept.exists() and not target.exists():
            shutil.copyfile(kept, target)
    missing = {s: r for s, r in sections.items() if not (workdir / "src" / f"{s}.tar.gz").exists()}
    if missing:
        progress.phase("PyPI sdists: " + ", ".join(missing.values()))
        script = " && ".join(
            f"pip download -q --no-deps --no-binary :all: -d /tmp/{s} {shlex.quote(r)} "
            f"&& mv /tmp/{s}/*.tar.gz {recipe.source_file(s)}"
            for s, r in missing.items()
        )
        run("downloading the OpenStack sources from PyPI", ["sh", "-ec", script], progress.line)
        for section, requirement in missing.items():
            kept = shared / "sdists" / f"{requirement}.tar.gz"
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workdir / "src" / f"{section}.tar.gz", kept)
    constraints = workdir / "src" / "requirements" / "upper-constraints.txt"
    constrained = list(dict.fromkeys(wanted))
    key = recipe.constraints_key(
        kolla, sections, constrained, inputs_files(workdir), pip_index(config)
    )
    kept_constraints = shared / "constraints" / f"{key}.txt"
    if kept_constraints.exists() and not constraints.exists():
        shutil.copyfile(kept_constraints, constraints)
    if wanted and not constraints.exists():
        progress.phase("upper constraints: resolving the images' Python packages on PyPI")
        sdists = " ".join(recipe.source_file(s) for s in sections)
        script = (
            f"python3 {recipe.RECIPE}/kpc_constraints.py {recipe.CONSTRAINTS}.part {sdists} "
            f"--images {','.join(constrained)} && mv {recipe.CONSTRAINTS}.part {recipe.CONSTRAINTS}"
        )
        run("resolving the upper constraints", ["sh", "-ec", script], progress.line)
        kept_constraints.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(constraints, kept_constraints)
    sections = source_sections(sets, chosen)

    stamp = (now or datetime.now()).strftime("%Y%m%dT%H%M%S")
    conf = recipe.build_conf(
        kolla,
        base_image=source_base.rpartition(":")[0],
        base_tag=source_base.rpartition(":")[2],
        image_namespace=namespace,
        threads=threads or config.kolla.build_threads,
        pip_index=pip_index(config),
        sources=list(sections),
        plugins_off=sets.plugins_off,
    ).replace(f"logs_dir = {recipe.LOGS}", f"logs_dir = {recipe.LOGS}/{stamp}")
    if no_cache:  # every image again, every step: kolla's --nocache, no skipping
        conf = conf.replace("skip_existing = true", "skip_existing = false\ncache = false")
    _write(workdir / "recipe" / "kolla-build.conf", conf)
    logs = workdir / "logs" / stamp
    logs.mkdir(parents=True, exist_ok=True)
    summary_file = workdir / "summary.json"
    summary_file.unlink(missing_ok=True)
    progress.phase(f"kolla-build (logs: {logs})")

    build_log = (logs / KOLLA_BUILD_LOG).open("w", encoding="utf-8")

    def on_line(line: str) -> None:
        build_log.write(line + "\n")
        found = buildout.event(line)
        if found is not None and found.kind != "output":
            progress.event(found)
        progress.line(line)

    argv = ["kolla-build", "--config-file", f"{recipe.RECIPE}/kolla-build.conf"]
    call_failed: KpcError | None = None
    try:
        run("kolla-build", [*argv, recipe.regex(chosen)], on_line)
    except KpcError as exc:
        call_failed = exc
    finally:
        build_log.close()
    if not summary_file.exists():
        raise call_failed or KpcError("kolla-build wrote no summary", hint=f"see {logs}")
    result = buildout.summary(summary_file.read_text(encoding="utf-8"))
    images: list[ImageResult] = []
    ready: dict[str, str] = {}
    for name in chosen:
        log = logs / f"{name}.log"
        log_or_none = log if log.exists() else None
        if name in result.failed or docker.image(local[name]) is None:
            images.append(
                ImageResult(name, "failed", None, log_or_none, why=_why(name, result, logs))
            )
            continue
        status = "built" if name in result.built else "cached"
        took = _took(log_or_none) if status == "built" else None
        images.append(ImageResult(name, status, took, log_or_none))
        ready[name] = local[name]
    return _finish(
        config, docker, sets, digest, namespace, workdir, tuple(images), ready, push, progress,
        began,
    )  # fmt: skip


def _finish(
    config: SiteConfig,
    docker: Docker,
    sets: ImageSets,
    digest: str,
    namespace: str,
    workdir: Path,
    images: tuple[ImageResult, ...],
    ready: Mapping[str, str],
    push: bool,
    progress: Progress,
    began: float,
) -> BuildReport:
    """Push what was built (or found), report, and fail naming every image that was not."""
    if push and ready:
        pushed = push_images(config, docker, ready, progress)
        images = tuple(dataclasses.replace(i, pushed=pushed.get(i.name)) for i in images)
    unbuildable = {n: u.why for n, u in sets.unbuildable.items()}
    for plugin in sets.plugins_off:  # e.g. nova-base-plugin-blazar: only when nova is built
        service = plugin.split("-", 1)[0]
        if any(i.name.startswith(f"{service}-") for i in images):
            unbuildable[plugin] = (
                "kolla's optional plugin, a tarball on opendev.org: built without it"
            )
    report = BuildReport(
        digest, namespace, image_tag(config), workdir, images, unbuildable,
        time.monotonic() - began,
    )  # fmt: skip
    if report.failed:
        raise ImagesFailed(report)
    return report


def _took(log: Path | None) -> float | None:
    if log is None:
        return None
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        if "Built at" in line:
            found = buildout.event("INFO:kolla.common.utils.x:" + line.split(":", 2)[-1])
            return buildout.seconds(found.text) if found else None
    return None


def _why(name: str, result: buildout.Summary, logs: Path) -> str:
    if not result.knows(name):
        return "kolla has no image of that name (see: kolla-build --list-images)"
    status = result.failed.get(name, "not built")
    if status == "error" and (logs / f"{name}.log").exists():
        return _failed_at(logs / f"{name}.log")
    if status == "building":
        return _stopped(logs)
    failed = [n for n, s in result.failed.items() if s in ("error", "building") and n != name]
    # kolla names an image's parents <service>-base, openstack-base and base
    parents = [p for p in failed if p in _ANCESTORS or name.startswith(p.removesuffix("base"))]
    causes = [f"{p} {_parent_failure(p, result, logs)}" for p in parents or failed]
    return f"not built: a parent image failed ({'; '.join(causes) or 'see ' + str(logs)})"


_ANCESTORS = ("base", "openstack-base")
KOLLA_BUILD_LOG = "kolla-build.log"  # kolla-build's own output, beside the images' logs


def _parent_failure(parent: str, result: buildout.Summary, logs: Path) -> str:
    if result.failed.get(parent) == "building":
        return _stopped(logs)
    log = logs / f"{parent}.log"
    return _failed_at(log) if log.exists() else "failed"


def _stopped(logs: Path) -> str:
    """An image kolla-build started but never finished: its own log ends at the start, and
    kolla-build's log holds why (e.g. a plugin source it could not download)."""
    log = logs / KOLLA_BUILD_LOG
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    errors = [x.strip() for x in lines if "Error" in x or "error" in x]
    last = f": {errors[-1][:300]}" if errors else ""
    return f"kolla-build stopped while building it, outside the image's log{last}; log: {log}"


def _failed_at(log: Path) -> str:
    step, tail = buildout.failed_step(
        log.read_text(encoding="utf-8", errors="replace").splitlines()
    )
    where = f" at step '{step[:160]}'" if step else ""
    return f"failed{where}: " + " / ".join(t.strip() for t in tail[-3:]) + f"; log: {log}"
