"""The site configuration: one YAML file, one pydantic model, validated once.

Pure: loading reads only the file it is given; nothing here looks at the environment. Errors
come back as one ConfigError whose problems read ``FILE:LINE: field.path: message``.
Secrets are only ever references (an environment variable name or a private file); a literal
secret in the YAML is refused.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

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
from appliance.inputfile import KIB, MIB, load_yaml, read_text
from appliance.kolla.release import DEFAULT as KOLLA_DEFAULT_RELEASE
from appliance.kolla.release import RELEASES as KOLLA_RELEASES
from appliance.mac import MAC_RE, normalize_mac

DEFAULT_CONFIG_PATH = Path("/etc/kpc/kpc.yaml")
MAX_CONFIG_BYTES = 1 * MIB
MAX_SECRET_BYTES = 64 * KIB
LITERAL_SECRET_HINT = (
    "write a reference instead: {env: KPC_BMC_PASSWORD} (an environment variable name) or "
    "{file: /etc/kpc/secrets/bmc-password} (a file readable only by its owner)"
)


class Model(BaseModel):
    """Base for every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Model):
    """Where a secret lives. Exactly one of ``env`` and ``file``."""

    # Upper case only: a mixed-case "name" is more likely the secret itself, pasted in the
    # wrong place, and errors about it never repeat what was written (see _message).
    env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
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
        try:
            return read_text(self.file, what="secret file", limit=MAX_SECRET_BYTES).strip()
        except FileNotFoundError:
            raise SecretError(f"cannot read secret file {self.file}: no such file") from None
        except ConfigError as exc:
            raise SecretError(exc.message, hint=exc.hint) from None


IPv4Address = Annotated[ipaddress.IPv4Address, Field()]
IPv4Network = Annotated[ipaddress.IPv4Network, Field()]


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
    protocol: Literal["ipmi", "redfish"] | None = None


class Bmc(Model):
    networks: list[IPv4Network] = Field(default_factory=list)
    user: str = "ADMIN"
    password: SecretRef = SecretRef(env="KPC_BMC_PASSWORD")
    hosts: list[BmcHost] = Field(default_factory=list)
    protocol: Literal["auto", "ipmi", "redfish"] = Field(
        default="auto",
        description="auto: Redfish where discovery found it, else IPMI",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="PEM CA bundle that signs the BMCs' HTTPS certificates (else: pinned "
        "on first use)",
    )
    rate: int = Field(default=500, ge=1, description="discovery packets per second")
    fanout: int = Field(default=50, ge=1, le=1024)
    timeout: float = Field(default=10.0, gt=0)


class InstallDisk(Model):
    """How the install Ignition picks the disk on a node: a pattern, or the smallest disk."""

    by_path: str | None = Field(default=None, min_length=1)
    by_id: str | None = Field(default=None, min_length=1)
    smallest: bool = True

    @field_validator("by_path", "by_id")
    @classmethod
    def _one_name(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or "\n" in value):
            raise ValueError(
                f"{value!r}: give a name pattern inside /dev/disk/by-path or /dev/disk/by-id "
                "(like 'pci-0000:00:1f.2-ata-1*'), without '/'"
            )
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> InstallDisk:
        if self.by_path and self.by_id:
            raise ValueError("give by_path or by_id, not both")
        if not (self.by_path or self.by_id or self.smallest):
            raise ValueError("no rule picks a disk: set by_path, by_id, or smallest: true")
        return self


class Os(Model):
    flavor: Literal["flatcar"] = "flatcar"
    channel: Literal["stable", "beta", "alpha", "lts"] = "stable"
    version: str = Field(default="host", pattern=r"^(host|current|\d+\.\d+\.\d+)$")
    mirror: str = "https://{channel}.release.flatcar-linux.net/amd64-usr"
    # Where nodes download the image flatcar-install writes: "bootcfg" = the deploy host's
    # assets (what 'kpc assets fetch' verified; the PXE kernel comes from there too), so a
    # rack needs no Internet access; "mirror" = straight from `mirror`.
    install_from: Literal["bootcfg", "mirror"] = "bootcfg"
    install_disk: InstallDisk = InstallDisk()

    @field_validator("mirror")
    @classmethod
    def _mirror_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value) or any(c in value for c in "\r\n"):
            raise ValueError(
                f"{value!r} is not an http:// or https:// URL "
                "(like https://{channel}.release.flatcar-linux.net/amd64-usr)"
            )
        return value.rstrip("/")


def _server_urls(urls: list[str], pattern: str, what: str, example: str) -> list[str]:
    """``urls`` unchanged when each is a server's base URL, else ValueError naming it."""
    for url in urls:
        if not re.fullmatch(pattern, url):
            raise ValueError(f"{url!r} is not {what} URL like {example}")
    return urls


class Bootcfg(Model):
    listen: IPv4Address = ipaddress.IPv4Address("0.0.0.0")
    port: int = Field(default=8080, ge=1, le=65535)
    data_dir: Path = Path("/var/lib/kpc/bootcfg")
    state_db: Path | None = None  # the machine registry; default: data_dir / "machines.db"
    token: SecretRef | None = None
    max_body: int = Field(default=65536, ge=1024)
    # per-machine: install-complete needs the machine's own install token, check-ins are
    # signed with its SSH host key, unknown MACs cannot write. open: anyone on the
    # provisioning network may report installs and check-ins (a lab or a trusted LAN only)
    node_auth: Literal["per-machine", "open"] = "per-machine"
    max_unknown: int = Field(default=512, ge=1)  # discovered machines never installed
    new_machines_per_minute: int = Field(default=600, ge=1)
    # the other deploy hosts' bootcfg URLs (several deploy hosts on one etcd registry):
    # nodes report install-complete and check-ins there when this bootcfg does not answer
    peers: list[str] = []

    @field_validator("peers")
    @classmethod
    def _peer_urls(cls, value: list[str]) -> list[str]:
        return _server_urls(
            value, r"https?://[^/\s:'\"]+(:\d+)?", "a bootcfg", "http://10.0.0.6:8080"
        )


class EtcdSettings(Model):
    """The etcd cluster holding the machine registry when ``state.backend`` is ``etcd``."""

    endpoints: list[str] = Field(min_length=1)  # https://HOST:2379 (each member's client URL)
    prefix: str = "kpc/"  # every key kpc writes starts with it (one site per prefix)
    ca_file: Path | None = None  # the CA that signed the members' certificates
    cert_file: Path | None = None  # this host's client certificate ...
    key: SecretRef | None = None  # ... and its private key (a secret reference)
    user: str | None = None  # etcd user auth
    password: SecretRef | None = None
    timeout: float = Field(default=2.0, gt=0, le=60)  # seconds per request

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return _server_urls(
            value, r"https?://[^/\s]+(:\d+)?/?", "an etcd client", "https://10.0.0.5:2379"
        )

    @model_validator(mode="after")
    def _pairs(self) -> EtcdSettings:
        if (self.cert_file is None) != (self.key is None):
            raise ValueError("cert_file and key go together (a client certificate and its key)")
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password go together (etcd user auth)")
        if not self.prefix.endswith("/"):
            raise ValueError(f"prefix {self.prefix!r} must end with '/' (like kpc/)")
        return self


class State(Model):
    """Where the machine registry lives: ``sqlite`` (one file on this deploy host, the
    default) or ``etcd`` (a cluster several deploy hosts share)."""

    backend: Literal["sqlite", "etcd"] = "sqlite"
    etcd: EtcdSettings | None = None

    @model_validator(mode="after")
    def _etcd_given(self) -> State:
        if self.backend == "etcd" and self.etcd is None:
            raise ValueError("state.backend is etcd but state.etcd (endpoints, ...) is missing")
        return self


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
    release: str = KOLLA_DEFAULT_RELEASE  # OpenStack series; pins kolla/kolla-ansible
    # Which OpenStack services: 'core' (kolla-ansible's default core: keystone, glance, nova,
    # neutron, placement, heat, horizon + infrastructure) or 'minimal' (keystone alone, with
    # MariaDB, memcached and the load balancer).
    services: Literal["minimal", "core"] = "core"
    base_distro: Literal["debian", "ubuntu", "rocky", "centos"] = "debian"
    internal_vip: IPv4Address | None = None
    network_interface: str = "eth0"  # per host from its facts; this where they name none
    neutron_external_interface: str = "eth1"
    config_dir: Path = Path("/etc/kpc/kolla")
    ssh_user: str = "core"
    roles: Roles = Roles()
    globals: dict[str, Any] = Field(default_factory=dict)
    upstream_registry: str = "quay.io"
    upstream_namespace: str = "openstack.kolla"
    build_threads: int = Field(default=1, ge=1, le=16)  # parallel kolla-build image builds

    @field_validator("release")
    @classmethod
    def _known_release(cls, value: str) -> str:
        if value not in KOLLA_RELEASES:
            raise ValueError(f"kpc knows OpenStack release(s) {', '.join(KOLLA_RELEASES)}")
        return value


class Images(Model):
    """How kpc builds its container images (no registry needed)."""

    base: str = "kpc/base:bookworm"
    prefix: str = "kpc"
    debian_mirror: str = "http://deb.debian.org/debian"
    debian_suite: str = "bookworm"
    pypi_index: str | None = None
    ca_bundle: Path | None = None

    def base_for(self, suite: str) -> str:
        """The base image of a Debian ``suite``: ``base`` itself for ``debian_suite``, else
        the same repository tagged with the suite (``kpc/base:trixie``)."""
        if suite == self.debian_suite:
            return self.base
        name, _, tag = self.base.rpartition(":")
        repository = name if tag and "/" not in tag else self.base
        return f"{repository}:{suite}"


class Services(Model):
    """How kpc runs its service containers."""

    prefix: str = Field(default="kpc", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    health_timeout: float = Field(default=60.0, gt=0)
    # None: dnsmasq (and web) on the host's network, bootcfg and the registry on Docker's
    # bridge with published ports. ``container:NAME``: every service shares the network
    # namespace of container NAME (a deploy host living in its own namespace, like the lab's
    # second one); nothing is published, each service listens there on its own port.
    network: str | None = Field(default=None, pattern=r"^container:[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


class Ssh(Model):
    user: str = "core"
    private_key: Path | None = None
    port: int = Field(default=22, ge=1, le=65535)  # the nodes' SSH port
    fanout: int = Field(default=32, ge=1, le=1024)
    timeout: float = Field(default=10.0, gt=0)


class Web(Model):
    """The live web view of the rack (``kpc web``; the ``web`` service of ``kpc up``)."""

    enabled: bool = False  # run the web service with `kpc up`
    listen: IPv4Address | None = None  # default: provisioning.address
    port: int = Field(default=8070, ge=1, le=65535)
    # Operators log in with this site secret (and a name, kept in the audit log).
    password: SecretRef | None = None
    # Or trust a user name in this request header, set by a reverse proxy in front of kpc,
    # from these addresses only. Explicit opt-in: anyone reaching the port could set it.
    proxy_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+$")
    proxy_addresses: list[IPv4Address] = Field(
        default_factory=lambda: [ipaddress.IPv4Address("127.0.0.1")]
    )
    actions: bool = False  # allow actions (boot mode, power, PXE) from the web view
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # A machine is shown as stuck when it stays longer than this in a state (seconds).
    stuck_after: dict[str, float] = Field(
        default_factory=lambda: {"discovered": 900.0, "installing": 1800.0, "installed": 900.0}
    )
    serial_logs: Path | None = None  # the lab's servers directory: console tails shown

    @field_validator("stuck_after")
    @classmethod
    def _states(cls, value: dict[str, float]) -> dict[str, float]:
        states = ("discovered", "installing", "installed", "ready", "maintenance", "rescue")
        for name, seconds in value.items():
            if name not in states:
                raise ValueError(f"{name!r} is not a machine state (one of {', '.join(states)})")
            if seconds <= 0:
                raise ValueError(f"{name}: {seconds} is not a positive number of seconds")
        return value


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
    web: Web = Web()
    state: State = State()

    @property
    def registry_address(self) -> ipaddress.IPv4Address:
        return self.registry.address or self.provisioning.address

    @property
    def bootcfg_url(self) -> str:
        """The URL booting machines use to reach bootcfg."""
        return f"http://{self.provisioning.address}:{self.bootcfg.port}"

    @property
    def os_install_base(self) -> str:
        """The ``flatcar-install -b`` base URL nodes install from (see ``os.install_from``)."""
        if self.os.install_from == "bootcfg":
            return f"{self.bootcfg_url}/assets/flatcar"
        return self.os_mirror

    @property
    def os_mirror(self) -> str:
        return self.os.mirror.replace("{channel}", self.os.channel)


# --- loading ---------------------------------------------------------------------------

Loc = tuple[str | int, ...]

# What a value must look like, for fields whose pattern alone would not say it plainly.
EXPECTATIONS: Mapping[tuple[str, ...], str] = {
    ("os", "version"): "'host' (the same as this deploy host), 'current', or a release like "
    "3975.2.0",
    ("services", "prefix"): "lower-case letters, digits, '.', '_' or '-' (like kpc)",
    ("services", "network"): "container:NAME (the container whose network namespace the "
    "services share), or leave it out",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would keep the last)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} is given twice (first on line {seen[key]}); "
                "one would silently replace the other",
                key_node.start_mark,
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _no_duplicates,
)


def _line_index(text: str) -> dict[Loc, int]:
    """Map each YAML key/item path to its 1-based line, for error messages."""
    lines: dict[Loc, int] = {}

    def walk(node: yaml.Node, path: Loc) -> None:
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
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The config section class that holds the field at ``loc`` (for spelling suggestions)."""
    model: type[BaseModel] = SiteConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        found = _model_in(field.annotation)
        if found is None:
            return None
        model = found
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _clean_loc(loc: Loc) -> Loc:
    """Drop pydantic's union/function markers (``function-after[...]``, ``str``...)."""
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in p and p not in _MARKERS))


_MARKERS = frozenset(
    {"str", "int", "float", "bool", "list", "dict", "is-instance", "lax-or-strict"}
)


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return str(value)


def _message(error: Mapping[str, Any], loc: Loc) -> str:
    """One plain sentence for a pydantic error: what was expected, what was found."""
    kind = str(error.get("type", ""))
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        model = _model_at(loc)
        name = str(loc[-1]) if loc else ""
        known = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(name, known, n=1)
        guess = f"did you mean '{close[0]}'? " if close else ""
        listing = f"known keys here: {', '.join(known)}" if known else ""
        return f"unknown key ({guess}{listing})".replace(" )", ")").replace("()", "").strip()
    if kind == "missing":
        return "required key is missing"
    if kind == "ip_v4_address":
        return f"expected an IPv4 address (like 192.0.2.10), got {_show(value)}"
    if kind == "ip_v4_network":
        try:
            net = ipaddress.IPv4Network(str(value), strict=False)
        except ValueError:
            return f"expected an IPv4 network in CIDR form (like 192.0.2.0/24), got {_show(value)}"
        return f"{value} has host bits set; the network is {net}"
    if kind in ("string_type", "str_type"):
        hint = "; put it in quotes" if isinstance(value, (int, float)) else ""
        return f"expected text, got {_show(value)}{hint}"
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "env":
        return (
            "expected the name of an environment variable (upper-case letters, digits and _, "
            "like KPC_BMC_PASSWORD); what is written there is not repeated, in case it is the "
            "secret itself"
        )
    if kind == "string_pattern_mismatch":
        key = tuple(p for p in loc if isinstance(p, str))
        expected = EXPECTATIONS.get(key[-2:]) or EXPECTATIONS.get(key[-1:])
        return (
            f"expected {expected or 'text matching ' + str(ctx.get('pattern'))}, got {_show(value)}"
        )
    if kind == "literal_error":
        options = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        choices = [o.strip() for o in options.split(",")]
        close = difflib.get_close_matches(str(value), choices, n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        return f"expected one of {', '.join(choices)}; got {_show(value)}{guess}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_show(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_show(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_show(value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys (key: value lines), got {_show(value)}"
    if kind == "list_type":
        return f"expected a list, got {_show(value)}"
    bounds = {
        "less_than_equal": "at most {le}",
        "less_than": "less than {lt}",
        "greater_than_equal": "at least {ge}",
        "greater_than": "more than {gt}",
        "too_short": "at least {min_length} long",
        "string_too_short": "at least {min_length} characters",
        "string_too_long": "at most {max_length} characters",
    }
    if kind in bounds:
        return f"must be {bounds[kind].format(**ctx)}, got {_show(value)}"
    msg = str(error.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def _problems(exc: ValidationError, text: str, source: str) -> list[str]:
    lines = _line_index(text)
    found: list[tuple[int, str]] = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]))
        line = None
        for cut in range(len(loc), -1, -1):
            line = lines.get(loc[:cut])
            if line is not None:
                break
        where = f"{source}:{line}" if line is not None else source
        found.append((line or 0, f"{where}: {_dotted(loc)}: {_message(err, loc)}"))
    found.sort(key=lambda item: item[0])
    return [problem for _, problem in found]


def parse_config(text: str, source: str = "<config>") -> SiteConfig:
    """Validate YAML text into a SiteConfig, or raise ConfigError listing every problem."""
    try:
        data = load_yaml(text, source, _UniqueKeyLoader)  # depth and size bounded first
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: not valid YAML: {problem}",
            hint="keep one of them (merge what they hold)"
            if "given twice" in problem
            else "check the indentation and quoting around that line (YAML uses spaces only)",
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections (provisioning:, os:, ...) at the top "
            f"level, got {_show(data)}",
            hint="'kpc config init' writes a complete, commented example",
        )
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, text, source)
        count = len(problems)
        raise ConfigError(
            f"{source}: {count} problem{'s' if count != 1 else ''} in the site configuration",
            hint="fix the lines above, then run 'kpc config validate'",
            problems=problems,
        ) from None


def load_config(path: Path) -> SiteConfig:
    """Read and validate the site config file at ``path``."""
    try:
        text = read_text(path, what="site config", limit=MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(
            f"no site configuration at {path}",
            hint="create one with 'kpc config init', or point --config / KPC_CONFIG at it",
        ) from None
    return parse_config(text, source=str(path))


def secret_refs(config: BaseModel, path: str = "") -> list[tuple[str, SecretRef]]:
    """Every secret reference in the config, with its field path (``bmc.hosts[0].password``)."""
    found: list[tuple[str, SecretRef]] = []

    def visit(value: Any, where: str) -> None:
        if isinstance(value, SecretRef):
            found.append((where, value))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                visit(getattr(value, name), f"{where}.{name}" if where else name)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{where}[{index}]")

    visit(config, path)
    return found


def check_secrets(config: SiteConfig, environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Problems with the secret references: (errors, notes). Never includes a secret's value.

    A secret file that is missing or readable by group/others is an error; an environment
    variable that is not set now is only a note (it may be set when the command runs).
    """
    errors: list[str] = []
    notes: list[str] = []
    for where, ref in secret_refs(config):
        try:
            ref.resolve(environ)
        except SecretError as exc:
            text = f"{where}: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
            (notes if ref.env is not None else errors).append(text)
    return errors, notes


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
    "check_secrets",
    "config_path",
    "dump_config",
    "load_config",
    "normalize_mac",
    "parse_config",
    "secret_refs",
]


def security_warnings(config: SiteConfig) -> list[str]:
    """What in ``config`` opens bootcfg's writes to the provisioning network (each one line,
    saying what an attacker there could do and the setting that closes it)."""
    boot = config.bootcfg
    warnings: list[str] = []
    if boot.node_auth == "open":
        where = "anyone who can reach " + (
            "any address of this host" if str(boot.listen) == "0.0.0.0" else str(boot.listen)
        )
        warnings.append(
            f"bootcfg.node_auth is 'open': {where} on port {boot.port} can report installs "
            "and check-ins for any MAC (cancel installs, move nodes, add ready machines that "
            "Kolla would deploy to); remove the setting for per-machine credentials"
        )
        if boot.token is not None:
            warnings.append(
                "bootcfg.token is written into the Ignition configs bootcfg serves without "
                "authentication, so anyone who can fetch one can use it"
            )
    elif boot.token is not None:
        warnings.append(
            "bootcfg.token is not used with node_auth 'per-machine' (each machine has its own "
            "credentials); remove it"
        )
    return warnings
