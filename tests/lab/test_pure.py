"""The lab's pure parts: plan, renderers, VM spec, initramfs archive and disk layout."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.errors import ConfigError, UsageError
from appliance.lab import osimage, render
from appliance.lab.layout import LabPaths
from appliance.lab.plan import LAB_RANGE, LabPlan, make_plan, plan_from_dict, plan_to_dict
from appliance.lab.vmspec import VmSpec, load_spec, qemu_argv, spec_to_json
from tests.conftest import require_root, require_tool


def test_plan_mixed_firmware_addresses_and_names() -> None:
    plan = make_plan(3, "mixed")
    assert [s.firmware for s in plan.servers] == ["bios", "uefi", "bios"]
    assert [str(s.bmc_address) for s in plan.servers] == [
        "198.18.1.11",
        "198.18.1.12",
        "198.18.1.13",
    ]
    assert len({s.mac for s in plan.servers}) == 3
    assert plan.namespaces == ("kpcl-sw", "kpcl-rtr", "kpcl-bmc")
    assert plan.host_links == ("kpclab0", "kpclab1")
    for address in (plan.router_address, plan.deploy_address, plan.deploy_bmc_address):
        assert address in LAB_RANGE
    assert plan.server("server2") is plan.servers[1]
    assert plan.server(plan.servers[2].mac) is plan.servers[2]
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan


@pytest.mark.parametrize(
    ("nodes", "name", "memory"),
    [(0, "kpcl", 256), (65, "kpcl", 256), (1, "Bad-Name", 256), (1, "x", 256), (1, "kpcl", 64)],
)
def test_plan_refuses_what_cannot_work(nodes: int, name: str, memory: int) -> None:
    with pytest.raises(UsageError):
        make_plan(nodes, "bios", name=name, memory_mib=memory)


def test_servers_get_the_vcpus_asked_for_and_old_records_one() -> None:
    plan = make_plan(2, "bios", cpus=2)
    assert [s.cpus for s in plan.servers] == [2, 2]
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan
    record = plan_to_dict(plan)
    for server in record["servers"]:  # type: ignore[attr-defined]
        del server["cpus"]  # a lab made before --cpus existed
    assert [s.cpus for s in plan_from_dict(record).servers] == [1, 1]
    with pytest.raises(UsageError, match="--cpus must be between 1 and"):
        make_plan(1, "bios", cpus=0)


def test_router_serves_dhcp_and_ra_but_no_pxe() -> None:
    plan = make_plan(2)
    argv = render.router_argv(plan, Path("/l/leases"), Path("/l/log"))
    assert "--enable-ra" in argv
    assert "--dhcp-range=198.18.0.100,198.18.0.199,255.255.255.0,1h" in argv
    assert "--dhcp-option=option:router,198.18.0.1" in argv
    assert "--dhcp-option=option:ntp-server,198.18.0.1" in argv
    assert not [a for a in argv if "pxe" in a or "boot" in a or "tftp" in a]


def test_nft_ruleset_is_valid_and_names_both_links() -> None:
    plan = make_plan(1)
    ruleset = render.nft_ruleset(plan)
    assert '"kpclab0", "kpclab1"' in ruleset
    require_root()
    require_tool("nft")
    check = subprocess.run(["nft", "-c", "-f", "-"], input=ruleset, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


def _site_config(plan: LabPlan, tmp_path: Path, host: int = 1) -> str:
    return render.site_config(
        plan,
        directory=tmp_path,
        bmc_user="admin",
        bmc_password_file=tmp_path / "bmc-password",
        ssh_private_key=tmp_path / "ssh" / "id_ed25519",
        bootcfg_port=8080,
        registry_port=5000,
        services_prefix="kpclab",
        host=host,
    )


def test_two_deploy_hosts_share_one_etcd_and_serve_their_own_bootcfg(tmp_path: Path) -> None:
    from appliance.config import parse_config
    from appliance.lab.bootcfg_data import install_args

    plan = make_plan(2, deploy_hosts=2)
    assert plan_from_dict(plan_to_dict(plan)) == plan
    assert plan.namespaces[-1] == "kpcl-dh2" and "kpcl-dh2" not in plan.own_namespaces
    first, second = (parse_config(_site_config(plan, tmp_path, h), "lab.yaml") for h in (1, 2))
    assert str(first.provisioning.address) == "198.18.0.2" and first.services.network is None
    assert str(second.provisioning.address) == "198.18.0.3"
    assert second.provisioning.interface == "site0"
    assert second.services.network == "container:kpcl-dh2"
    assert second.services.prefix == "kpclab-h2"
    assert second.bootcfg.data_dir == tmp_path / "host2" / "bootcfg"
    # one registry: both on the same 3 etcd members, each host's own members first
    assert first.state.backend == second.state.backend == "etcd"
    assert first.state.etcd and second.state.etcd
    ends = first.state.etcd.endpoints
    assert len(set(ends)) == 3 and set(ends) == set(second.state.etcd.endpoints)
    assert second.state.etcd.endpoints[0] == "http://198.18.0.3:2379"
    assert render.bootcfg_urls(plan, 8080, 2) == [
        "http://198.18.0.3:8080",
        "http://198.18.0.2:8080",
    ]
    # each member knows the whole cluster; its client and peer URLs are its own
    argv = render.etcd_argv(plan, 1, tmp_path / "m2")
    cluster = argv[argv.index("--initial-cluster") + 1]
    assert cluster.count("=http://") == 3 and "kpcl-etcd2=http://198.18.0.3:2380" in cluster
    assert argv[argv.index("--listen-client-urls") + 1] == "http://198.18.0.3:2379"
    # the installer is told the other deploy host's bootcfg (one host: nothing added)
    assert "kpc.bootcfg.also=http://198.18.0.2:8080" in install_args(
        "http://198.18.0.3:8080", ["http://198.18.0.2:8080"]
    )
    assert not any(a.startswith("kpc.bootcfg.also") for a in install_args("http://x:1"))
    one = parse_config(_site_config(make_plan(1), tmp_path), "lab.yaml")
    assert one.state.backend == "sqlite"
    with pytest.raises(UsageError, match="--deploy-hosts"):
        make_plan(1, deploy_hosts=3)


def test_site_config_is_accepted_by_kpc(tmp_path: Path) -> None:
    from appliance.config import parse_config

    config = parse_config(_site_config(make_plan(2), tmp_path), "lab.yaml")
    assert config.provisioning.interface == "kpclab0"
    assert config.provisioning.address == ipaddress.IPv4Address("198.18.0.2")
    assert config.bmc.networks == [ipaddress.IPv4Network("198.18.1.0/24")]
    assert config.bootcfg.data_dir == tmp_path / "bootcfg"
    assert config.web.serial_logs == tmp_path / "servers"
    # the lab's kolla files stay in the lab; two servers: control on the first only
    assert config.kolla.config_dir == tmp_path / "kolla"
    assert config.kolla.roles.first == 1
    # the lab's site has an NTP server (on its router): kolla's clock precheck stays on
    assert config.kolla.globals == {"keepalived_track_script_enabled": False}
    assert config.kolla.roles.first_groups == ["control", "network", "monitoring"]
    one = parse_config(_site_config(make_plan(1), tmp_path), "lab.yaml")
    # one server holds every role kpc requires a machine for (compute included)
    assert "compute" in one.kolla.roles.first_groups


def _spec(tmp_path: Path, firmware: str) -> VmSpec:
    return VmSpec(
        name="server1",
        firmware="uefi" if firmware == "uefi" else "bios",
        memory_mib=256,
        mac="52:54:00:c6:12:01",
        netns="kpcl-sw",
        tap="tap1",
        disk=tmp_path / "disk.qcow2",
        serial_log=tmp_path / "serial.log",
        qmp_socket=tmp_path / "qmp.sock",
        qemu_log=tmp_path / "qemu.log",
        ovmf_code=Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
        ovmf_vars_template=Path("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        ovmf_vars=tmp_path / "vars.fd",
    )


def test_vm_spec_round_trip_and_boot_order(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "uefi")
    (tmp_path / "vm.json").write_text(spec_to_json(spec))
    assert load_spec(tmp_path / "vm.json") == spec
    disk_first = " ".join(qemu_argv(spec, network_first=False))
    assert (
        "bootindex=1" in disk_first
        and "nic0,netdev=net0,mac=52:54:00:c6:12:01,bootindex=2" in disk_first
    )
    assert "-accel tcg" in disk_first and "q35" in disk_first
    assert "-smp 1 " in disk_first
    assert "-smp 2 " in " ".join(qemu_argv(replace(spec, cpus=2), network_first=False))
    assert "bootindex=0" in " ".join(qemu_argv(spec, network_first=True))
    # the BMC's virtual CD drive: empty and last, unless a one-time CD boot puts it first
    assert "ide-cd,drive=cdrom0,id=cd0,bootindex=3" in disk_first
    assert "media=cdrom,readonly=on -device" in disk_first  # no file: an empty drive
    iso = tmp_path / "m.iso"
    cd_first = " ".join(qemu_argv(spec, network_first=False, cd_first=True, media=iso))
    assert "id=cd0,bootindex=0" in cd_first and f"format=raw,file={iso}" in cd_first
    assert "mac=52:54:00:c6:12:01,bootindex=2" in cd_first


def test_vm_spec_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "vm.json"
    bad.write_text(json.dumps({"name": "x", "colour": "red"}))
    with pytest.raises(ConfigError, match=r"vm.json: unknown keys: colour"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="no VM spec"):
        load_spec(tmp_path / "missing.json")


def test_module_order_puts_dependencies_first() -> None:
    depends = {
        "virtio_net": ["virtio_ring", "virtio", "net_failover"],
        "net_failover": ["failover"],
        "failover": [],
        "virtio_ring": [],
        "virtio": [],
    }
    order = osimage.module_order(["virtio_net"], depends)
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")
    assert sorted(order) == sorted(depends)
    with pytest.raises(ValueError, match="loop"):
        osimage.module_order(["a"], {"a": ["b"], "b": ["a"]})


def test_parse_ldd() -> None:
    text = (
        "\tlinux-vdso.so.1 (0x00007ff)\n"
        "\tlibjq.so.1 => /lib/x86_64-linux-gnu/libjq.so.1 (0x00007f)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
    )
    assert osimage.parse_ldd(text) == [
        "/lib/x86_64-linux-gnu/libjq.so.1",
        "/lib64/ld-linux-x86-64.so.2",
    ]


def test_cpio_archive_is_read_by_cpio(tmp_path: Path) -> None:
    require_tool("cpio")
    entries = [
        osimage.Entry("bin/busybox", 0o755, b"#!/bin/sh\necho hi\n"),
        osimage.Entry("bin/sh", 0, target="busybox"),
        osimage.Entry("tmp", 0o041777),
        *osimage.directories_for(["bin/busybox"]),
    ]
    archive = osimage.cpio_newc(entries)
    listing = subprocess.run(
        ["cpio", "-itv"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert "bin/sh -> busybox" in listing
    assert "-rwxr-xr-x" in listing and "drwxrwxrwt" in listing
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=out, check=True)
    assert (out / "bin" / "busybox").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_mbr_partition_table_as_sfdisk_reads_it(tmp_path: Path) -> None:
    require_tool("sfdisk")
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(osimage.IMAGE_BYTES)
        f.write(osimage.mbr(b"\xeb\x63", osimage.layout_partitions()))
    dump = json.loads(
        subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, check=True).stdout
    )
    parts = dump["partitiontable"]["partitions"]
    assert [(p["start"], p["size"], p["type"]) for p in parts] == [
        (osimage.BOOT_START, osimage.BOOT_SECTORS, "ef"),
        (osimage.OEM_START, osimage.OEM_SECTORS, "da"),
    ]
    assert parts[0].get("bootable") is True
    assert image.read_bytes()[:2] == b"\xeb\x63"


def test_console_summary_puts_failures_first() -> None:
    from appliance.lab.status import console_summary, is_problem

    lines = [
        "[  1.0] kpc-labos: booting",
        "[ 168.1] ignition[359]: CRITICAL : Ignition failed: failed to fetch config: 404",
        "[ 170.0] Reached target emergency.target - Emergency Mode.",
    ]
    summary = console_summary(lines)
    assert summary == "Ignition failed: failed to fetch config: 404" and is_problem(summary)
    installing = ["kpc-install: fetching the installed system's config", "random noise"]
    assert console_summary(installing) == "kpc-install: fetching the installed system's config"
    assert not is_problem(console_summary(installing))
    assert console_summary(["just a line"]) == "just a line"
    assert console_summary([]) == ""
    # the node OS's console when Ignition's files stage failed (seen in the lab, 2026-11-29)
    stage = [
        "[FAILED] Failed to start ignition-files.service - Ignition (files).",
        "[DEPEND] Dependency failed for ignition-complete.target - Ignition Complete.",
        "Entering emergency mode. Exit the shell to continue.",
        "Press Enter to continue.",
    ]
    summary = console_summary(stage)
    assert summary == "Failed to start ignition-files.service - Ignition (files)."
    assert is_problem(summary)


def test_lab_down_removes_the_labs_kolla_config(tmp_path: Path) -> None:
    # genconfig and post-deploy write passwords.yml and the openrc there: the lab's own
    paths = LabPaths(tmp_path)
    assert paths.kolla in paths.owned()
