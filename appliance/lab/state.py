"""The lab's state file (``DIR/lab.json``): the plan and everything ``kpc lab up`` made.

Each resource is recorded *before* it is made, and the file is replaced atomically after
every change, so ``kpc lab down`` finds everything even after ``kpc lab up`` was killed
half-way (removing a thing that was never made is not an error).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from appliance.errors import ConfigError
from appliance.inputfile import MAX_STATE_BYTES, read_text
from appliance.lab.plan import LabPlan, plan_from_dict, plan_to_dict

STATE_FILE = "lab.json"
FORMAT = 1
Phase = Literal["creating", "up", "failed", "stopping"]
Kind = Literal["netns", "link", "nft", "process", "path"]


@dataclass(frozen=True)
class Resource:
    kind: Kind
    name: str  # netns/link/nft table name, process role, or path
    netns: str | None = None  # for links inside a namespace
    pid: int | None = None
    start_time: int | None = None  # /proc start time: the pid is this process, not a reuse


@dataclass
class LabState:
    directory: Path
    plan: LabPlan
    phase: Phase = "creating"
    resources: list[Resource] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    config: Path | None = None
    lab_os: Path | None = None
    firmware: str = "mixed"

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def processes(self) -> list[Resource]:
        return [r for r in self.resources if r.kind == "process"]


def state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def save_state(state: LabState) -> None:
    data: dict[str, Any] = {
        "format": FORMAT,
        "phase": state.phase,
        "created": state.created,
        "firmware": state.firmware,
        "config": str(state.config) if state.config else None,
        "lab_os": str(state.lab_os) if state.lab_os else None,
        "plan": plan_to_dict(state.plan),
        "resources": [
            {k: v for k, v in asdict(r).items() if v is not None} for r in state.resources
        ],
    }
    state.directory.mkdir(parents=True, exist_ok=True)
    tmp = state.path.with_name(f".{STATE_FILE}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(state.path)


def record(state: LabState, resource: Resource) -> None:
    """Note ``resource`` (before making it) and save."""
    if resource not in state.resources:
        state.resources.append(resource)
        save_state(state)


def load_state(directory: Path) -> LabState | None:
    """The lab recorded in ``directory``, None if there is none; ConfigError if damaged."""
    path = state_path(directory)
    try:
        data = json.loads(read_text(path, what="lab state file", limit=MAX_STATE_BYTES))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: the lab state file is damaged: {exc}",
            hint="remove the lab by hand (ip netns list; ip link) or restore the file",
        ) from None
    try:
        plan = plan_from_dict(data["plan"])
        resources = [
            Resource(
                kind=item["kind"],
                name=str(item["name"]),
                netns=item.get("netns"),
                pid=item.get("pid"),
                start_time=item.get("start_time"),
            )
            for item in data.get("resources", [])
        ]
        return LabState(
            directory=directory,
            plan=plan,
            phase=data.get("phase", "creating"),
            resources=resources,
            created=float(data.get("created", 0.0)),
            config=Path(data["config"]) if data.get("config") else None,
            lab_os=Path(data["lab_os"]) if data.get("lab_os") else None,
            firmware=str(data.get("firmware", "mixed")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{path}: the lab state file is damaged ({type(exc).__name__}: {exc})",
            hint="remove the lab by hand (ip netns list; ip link) or restore the file",
        ) from None
