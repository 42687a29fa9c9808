"""The site configuration: one YAML file, one pydantic model, validated once.

Pure: loading reads only the file it is given; nothing here looks at the environment. Errors
come back as one ConfigError whose problems read ``FILE:LINE: field.path: message``.
Secrets are only ever references (an environment variable name or a private file); a literal
secret in the YAML is refused.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance.errors import ConfigError, SecretError

DEFAULT_CONFIG_PATH = Path("/etc/kpc/kpc.yaml")
LITERAL_SECRET_HINT = (
    "write a reference instead: {env: KPC_BMC_PASSWORD} (an environment variable name) or "
    "{file: /etc/kpc/secrets/bmc-password} (a file readable only by its owner)"
)


class Model(BaseModel):
    """Base for every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Model):
    """Where a secret lives. Exactly one of ``env`` and ``file``."""

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse_literal(cls, value: Any) -> Any:
        if isinstance(value, (str, int, float)):
            raise ValueError(f"a literal secret is not allowed here; {LITERAL_SECRET_HINT}")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.file}"

    def resolve(self, environ: Mapping[str, str]) -> str:
        """Return the secret. Errors name the reference, never the value."""
        if self.env is not None:
            value = environ.get(self.env)
            if not value:
                raise SecretError(
                    f"the secret in environment variable {self.env} is not set",
                    hint=f"export {self.env}=... before running kpc (never pass it as an argument)",
                )
            return value
        assert self.file is not None
        try:
            info = self.file.stat()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {self.file}: {exc.strerror}") from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(
                f"secret file {self.file} is readable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o})",
                hint=f"chmod 600 {self.file}",
            )
        return self.file.read_text(encoding="utf-8").strip()


IPv4Address = Annotated[ipaddress.IPv4Address, Field()]
IPv4Network = Annotated[ipaddress.IPv4Network, Field()]
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def normalize_mac(value: str) -> str:
    """``AA-BB-..``, ``aabb..`` or ``aa:bb:..`` to ``aa:bb:cc:dd:ee:ff``; ValueError otherwise."""
    digits = re.sub(r"[:\-.]", "", value.strip().lower())
    if not re.fullmatch(r"[0-9a-f]{12}", digits):
        raise ValueError(f"not a MAC address: {value!r}")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


class Provisioning(Model):
    """The network the servers PXE boot on (proxy-DHCP runs here)."""

    interface: str = Field(min_length=1, max_length=15)
    address: IPv4Address
    subnet: IPv4Network

    @model_validator(mode="after")
    def _address_in_subnet(self) -> Provisioning:
        if self.address not in self.subnet:
            raise ValueError(f"address {self.address} is not inside subnet {self.subnet}")
        return self


class BmcHost(Model):
    """Per-BMC overrides from the inventory."""

    address: IPv4Address
    user: str | None = None
    password: SecretRef | None = None
    name: str | None = None


class Bmc(Model):
    networks: list[IPv4Network] = Field(default_factory=list)
    user: str = "ADMIN"
    password: SecretRef = SecretRef(env="KPC_BMC_PASSWORD")
    hosts: list[BmcHost] = Field(default_factory=list)
    rate: int = Field(default=500, ge=1, description="discovery packets per second")
    fanout: int = Field(default=50, ge=1, le=1024)
    timeout: float = Field(default=10.0, gt=0)


class InstallDisk(Model):
    """How the install Ignition picks the disk on a node: a pattern, or the smallest disk."""

    by_path: str | None = None
    by_id: str | None = None
    smallest: bool = True


class Os(Model):
    flavor: Literal["flatcar"] = "flatcar"
    channel: Literal["stable", "beta", "alpha", "lts"] = "stable"
    version: str = Field(default="host", pattern=r"^(host|current|\d+\.\d+\.\d+)$")
    mirror: str = "https://{channel}.release.flatcar-linux.net/amd64-usr"
    install_disk: InstallDisk = InstallDisk()


class Bootcfg(Model):
    listen: IPv4Address = ipaddress.IPv4Address("0.0.0.0")
    port: int = Field(default=8080, ge=1, le=65535)
    data_dir: Path = Path("/var/lib/kpc/bootcfg")
    state_db: Path | None = None  # the machine registry; default: data_dir / "machines.db"
    token: SecretRef | None = None
    max_body: int = Field(default=65536, ge=1024)


class Registry(Model):
    address: IPv4Address | None = None  # default: provisioning.address
    port: int = Field(default=5000, ge=1, le=65535)
    storage: Path = Path("/var/lib/kpc/registry")
    tls: bool = False
    user: str | None = None
    password: SecretRef | None = None


class Roles(Model):
    """Role rules: the first N ready machines get ``first_groups``, the rest ``rest_groups``."""

    first: int = Field(default=3, ge=0)
    first_groups: list[str] = Field(default_factory=lambda: ["control", "network", "monitoring"])
    rest_groups: list[str] = Field(default_factory=lambda: ["compute"])
    by_mac: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("by_mac")
    @classmethod
    def _macs(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {normalize_mac(mac): groups for mac, groups in value.items()}


class Kolla(Model):
    release: str = "2024.1"
    base_distro: Literal["debian", "ubuntu", "rocky", "centos"] = "debian"
    internal_vip: IPv4Address | None = None
    network_interface: str = "eth0"
    neutron_external_interface: str = "eth1"
    config_dir: Path = Path("/etc/kpc/kolla")
    ssh_user: str = "core"
    roles: Roles = Roles()
    globals: dict[str, Any] = Field(default_factory=dict)
    upstream_registry: str = "quay.io"
    upstream_namespace: str = "openstack.kolla"


class Images(Model):
    """How kpc builds its container images (no registry needed)."""

    base: str = "kpc/base:bookworm"
    prefix: str = "kpc"
    debian_mirror: str = "http://deb.debian.org/debian"
    debian_suite: str = "bookworm"
    pypi_index: str | None = None
    ca_bundle: Path | None = None


class Services(Model):
    """How kpc runs its service containers."""

    prefix: str = Field(default="kpc", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    health_timeout: float = Field(default=60.0, gt=0)


class Ssh(Model):
    user: str = "core"
    private_key: Path | None = None
    fanout: int = Field(default=32, ge=1, le=1024)
    timeout: float = Field(default=10.0, gt=0)


class Paths(Model):
    state_dir: Path = Path("/var/lib/kpc")
    log_dir: Path = Path("/var/log/kpc")
    source_dir: Path = Path("/etc/kpc")


class SiteConfig(Model):
    provisioning: Provisioning
    bmc: Bmc = Bmc()
    os: Os = Os()
    bootcfg: Bootcfg = Bootcfg()
    registry: Registry = Registry()
    kolla: Kolla = Kolla()
    images: Images = Images()
    services: Services = Services()
    ssh: Ssh = Ssh()
    paths: Paths = Paths()

    @property
    def registry_address(self) -> ipaddress.IPv4Address:
        return self.registry.address or self.provisioning.address

    @property
    def bootcfg_url(self) -> str:
        """The URL booting machines use to reach bootcfg."""
        return f"http://{self.provisioning.address}:{self.bootcfg.port}"

    @property
    def os_mirror(self) -> str:
        return self.os.mirror.replace("{channel}", self.os.channel)


# --- loading ---------------------------------------------------------------------------


def _line_index(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each YAML key/item path to its 1-based line, for error messages."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, child in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(child, sub)
        elif isinstance(node, yaml.SequenceNode):
            for index, child in enumerate(node.value):
                walk(child, (*path, index))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _format_error(
    source: str, lines: Mapping[tuple[str | int, ...], int], loc: tuple[str | int, ...], msg: str
) -> str:
    path = tuple(part for part in loc if not (isinstance(part, str) and "[" in part))
    line = None
    for cut in range(len(path), -1, -1):
        line = lines.get(path[:cut])
        if line is not None:
            break
    where = f"{source}:{line}" if line is not None else source
    dotted = ".".join(str(p) for p in path) or "(top level)"
    return f"{where}: {dotted}: {msg}"


def _message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see 'kpc config init' for every option)"
    if kind == "missing":
        return "required key is missing"
    msg = str(error.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def parse_config(text: str, source: str = "<config>") -> SiteConfig:
    """Validate YAML text into a SiteConfig, or raise ConfigError listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: not valid YAML: {problem}", problems=[f"{where}: {problem}"]
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        lines = _line_index(text)
        problems = [
            _format_error(source, lines, tuple(err["loc"]), _message(err)) for err in exc.errors()
        ]
        count = len(problems)
        raise ConfigError(
            f"{source}: {count} problem{'s' if count != 1 else ''} in the site configuration",
            hint="fix the lines above, then run 'kpc config validate'",
            problems=problems,
        ) from None


def load_config(path: Path) -> SiteConfig:
    """Read and validate the site config file at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no site configuration at {path}",
            hint="create one with 'kpc config init', or point --config / KPC_CONFIG at it",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, source=str(path))


def config_path(flag: Path | None, environ: Mapping[str, str]) -> Path:
    """The config file to use: --config, else KPC_CONFIG, else the default."""
    if flag is not None:
        return flag
    if environ.get("KPC_CONFIG"):
        return Path(environ["KPC_CONFIG"])
    return DEFAULT_CONFIG_PATH


def dump_config(config: SiteConfig) -> dict[str, Any]:
    """The effective configuration as plain JSON-able data (secrets are references anyway)."""
    data: dict[str, Any] = config.model_dump(mode="json", exclude_none=True)
    return data


__all__ = [
    "DEFAULT_CONFIG_PATH",
    "MAC_RE",
    "ConfigError",
    "SecretRef",
    "SiteConfig",
    "config_path",
    "dump_config",
    "load_config",
    "normalize_mac",
    "parse_config",
]
