"""kpc's ansible.cfg for every kolla-ansible run (read as ansible reads it: INI)."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

CFG = Path(__file__).resolve().parents[2] / "kolla" / "ansible.cfg"


def _cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    assert parser.read(CFG) == [str(CFG)]
    return parser


def test_a_dropped_ssh_session_is_tried_again_not_fatal() -> None:
    """ssh exit 255 ("Data could not be sent to remote host") is retried rather than
    ending a long deploy, and a silent session waits 2 minutes before it is dropped."""
    ssh = _cfg()["ssh_connection"]
    assert ssh.getint("retries") >= 3
    args = shlex.split(ssh["ssh_args"])
    options = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-o")
    alive = int(options["ServerAliveInterval"]) * int(options["ServerAliveCountMax"])
    assert alive >= 120


def test_host_keys_are_checked_against_kpcs_record() -> None:
    cfg = _cfg()
    assert cfg["defaults"].getboolean("host_key_checking")
    assert "UserKnownHostsFile=/run/kpc/known_hosts" in cfg["ssh_connection"]["ssh_args"]
