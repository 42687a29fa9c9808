"""Running one ``kpc kolla`` step in the deployer container, with its log kept.

The container gets the site's Kolla config directory at /etc/kolla, kpc's Kolla files at
/usr/share/kpc/kolla (read-only), and a per-run directory at /run/kpc with the SSH key
(read-only) and a known_hosts file built from the host keys the machine registry recorded.
Every output line goes to the caller (live) and to
``paths.log_dir/kolla/<timestamp>-<step>.log``.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from appliance.config import SiteConfig
from appliance.drivers.docker import Docker, Mount
from appliance.errors import ConfigError, KpcError
from appliance.kolla import commands, deployer
from appliance.kolla.genconfig import (
    GLOBALS,
    INVENTORY,
    PASSWORDS,
    deployer_image,
    deployer_name,
)
from appliance.kolla.globals import registry_endpoint
from appliance.kolla.output import Failure, PullFailure, failures, pull_failure
from appliance.nodes.hostkeys import write_known_hosts
from appliance.resources import resource_dir
from appliance.state.model import Machine


@dataclass(frozen=True)
class Access:
    """How the deployer logs in to the nodes: a key file and/or the caller's ssh-agent."""

    key_file: Path | None
    agent_socket: str | None

    def __post_init__(self) -> None:
        if self.key_file is None and self.agent_socket is None:
            raise ConfigError(
                "no SSH key for kolla-ansible: ssh.private_key is not set and no ssh-agent "
                "is running (SSH_AUTH_SOCK is empty)",
                hint="set ssh.private_key in the site config to the deploy host's private key",
            )


@dataclass(frozen=True)
class Outcome:
    step: str
    code: int
    log: Path
    failures: tuple[Failure, ...]
    pulls: tuple[PullFailure, ...]


class KollaFailed(KpcError):
    """kolla-ansible (or kpc's playbook) failed; exits with the same code it did."""

    def __init__(self, outcome: Outcome) -> None:
        message, hint = describe_failure(outcome)
        super().__init__(message, hint)
        self.outcome = outcome
        self.exit_code = outcome.code


def _grouped(items: Sequence[tuple[str, str]]) -> list[str]:
    """``host: text`` lines, one per distinct text, hosts joined: 'a, b: text'."""
    hosts: dict[str, list[str]] = {}
    for host, text in items:
        hosts.setdefault(text, [])
        if host not in hosts[text]:
            hosts[text].append(host)
    return [f"{', '.join(names)}: {text}" for text, names in hosts.items()]


# exit codes of a run stopped from outside (128 + the signal): Ctrl-C, docker stop, kill -9
STOPPED_BY = {130: "SIGINT", 143: "SIGTERM", 137: "SIGKILL"}


def describe_failure(outcome: Outcome) -> tuple[str, str]:
    """What went wrong, in kolla's own words, and what to do. Pure."""
    head = f"kolla {outcome.step} failed (exit code {outcome.code})"
    stopped = STOPPED_BY.get(outcome.code)
    if stopped and not outcome.failures and not outcome.pulls:
        return (
            f"kolla {outcome.step} was stopped before it finished ({stopped}, exit code "
            f"{outcome.code}): the deployer container was stopped or the run interrupted",
            f"run 'kpc kolla {outcome.step}' again: kolla-ansible's tasks are idempotent and "
            f"it goes on from what is already in place; full log: {outcome.log}",
        )
    if outcome.pulls:
        lines = _grouped(
            [
                (p.host, f"cannot pull image {p.image} from registry {p.registry}: {p.reason}")
                for p in outcome.pulls
            ]
        )
        hint = (
            "build the release's images into the deploy host's registry with 'kpc kolla "
            "images build' (or copy them with 'kpc registry mirror'; check docker_registry "
            f"in globals.yml); full log: {outcome.log}"
        )
    else:
        lines = _grouped(
            [
                (
                    f.host,
                    f"{'unreachable' if f.unreachable else f.task or 'failed'}: "
                    + f.message.replace("\n", "\n    "),
                )
                for f in outcome.failures
            ]
        )
        hint = (
            f"fix the problem above and run 'kpc kolla {outcome.step}' again; "
            f"full log: {outcome.log}"
        )
    if lines:
        head += ":\n  " + "\n  ".join(lines)
    else:
        head += "; the last lines of the log show why"
    return head, hint


def sysext_url(config: SiteConfig) -> str:
    """Where bootcfg serves Flatcar's files per version (the python extension among them)."""
    return f"{config.bootcfg_url}/assets/flatcar"


def require_generated(config: SiteConfig) -> None:
    missing = [
        name
        for name in (GLOBALS, INVENTORY, PASSWORDS)
        if not (config.kolla.config_dir / name).exists()
    ]
    if missing:
        raise ConfigError(
            f"no Kolla configuration in {config.kolla.config_dir} (missing: {', '.join(missing)})",
            hint="generate it first: kpc kolla genconfig",
        )


def log_path(config: SiteConfig, step: str, now: datetime) -> Path:
    return config.paths.log_dir / "kolla" / f"{now.strftime('%Y%m%dT%H%M%S')}-{step}.log"


def plan(
    config: SiteConfig,
    step: str,
    extra: Sequence[str],
    access: Access,
    run_dir: Path,
    kpc_dir: Path,
) -> deployer.Call:
    """The deployer container for ``step``. Pure."""
    mounts = [
        Mount(config.kolla.config_dir, commands.CONFIG_DIR),
        Mount(kpc_dir, commands.KPC_DIR, read_only=True),
        Mount(run_dir, commands.RUN_DIR),
    ]
    env = [("ANSIBLE_CONFIG", f"{commands.KPC_DIR}/ansible.cfg")]
    if access.key_file is not None:
        mounts.append(Mount(access.key_file, commands.SSH_KEY, read_only=True))
        env.append(("ANSIBLE_PRIVATE_KEY_FILE", commands.SSH_KEY))
    if access.agent_socket is not None:
        mounts.append(Mount(Path(access.agent_socket), f"{commands.RUN_DIR}/agent.sock"))
        env.append(("SSH_AUTH_SOCK", f"{commands.RUN_DIR}/agent.sock"))
    return deployer.Call(
        image=deployer_image(config),
        name=deployer_name(config),
        argv=tuple(commands.kolla_argv(step, extra, sysext_url=sysext_url(config))),
        mounts=tuple(mounts),
        env=tuple(env),
        network="host",
    )


def run_step(
    config: SiteConfig,
    docker: Docker,
    step: str,
    extra: Sequence[str],
    *,
    access: Access,
    machines: Sequence[Machine],
    on_line: Callable[[str], None],
    now: datetime,
) -> Outcome:
    """Run ``step`` to the end; the outcome carries kolla's exit code and its failures."""
    require_generated(config)
    log = log_path(config, step, now)
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log.parent.chmod(0o700)  # kolla's output can name secrets (tasks print their variables)
    config.paths.state_dir.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    with tempfile.TemporaryDirectory(dir=config.paths.state_dir, prefix="kolla-run-") as tmp:
        run_dir = Path(tmp)
        write_known_hosts(run_dir / "known_hosts", machines, config.ssh.port)
        call = plan(
            config, step, extra, access, run_dir, resource_dir("kolla", config.paths.source_dir)
        )
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"# kpc kolla {step}, {now.isoformat(timespec='seconds')}\n")
            handle.write(f"# {shlex.join(call.argv)}\n")

            def both(line: str) -> None:
                seen.append(line)
                handle.write(line + "\n")
                handle.flush()
                on_line(line)

            code = deployer.stream(docker, call, both)
    if step == "post-deploy":
        private_files(config.kolla.config_dir)
    found = failures(seen)
    registries = (registry_endpoint(config),)
    pulls = [p for p in (pull_failure(f, registries) for f in found) if p is not None]
    return Outcome(step, code, log, tuple(found), tuple(pulls))


# What kolla's post-deploy writes into the config directory: credentials, owner-only.
PRIVATE_PATTERNS = ("*openrc*.sh", "clouds.yaml", "passwords.yml")


def private_files(config_dir: Path) -> list[Path]:
    """Make the credential files in ``config_dir`` mode 0600; return them."""
    found = sorted({p for pattern in PRIVATE_PATTERNS for p in config_dir.glob(pattern)})
    for path in found:
        path.chmod(0o600)
    return found


def dry_run(config: SiteConfig, step: str, extra: Sequence[str], access: Access) -> list[str]:
    """The docker command ``step`` would run (with placeholder run directory). Pure."""
    call = plan(
        config,
        step,
        extra,
        access,
        config.paths.state_dir / "kolla-run-XXXX",
        resource_dir("kolla", config.paths.source_dir),
    )
    return ["docker", *deployer.run_argv(call)]
