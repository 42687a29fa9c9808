"""The Kolla image build's pure parts: release pins, image sets, kolla-build's input files,
the content hash, and reading kolla-build's output."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from appliance.errors import ConfigError, UsageError
from appliance.images.catalog import discover
from appliance.kolla import buildout, recipe
from appliance.kolla.client import check_openrc, openstack_call
from appliance.kolla.deployer import run_argv
from appliance.kolla.imagesets import choose, image_sets, needs_python, source_sections
from appliance.kolla.release import RELEASES, release
from appliance.kolla.run import private_files
from tests.conftest import REPO
from tests.kolla.helpers import site

R = release("2026.2")
SETS = image_sets("2026.2")


def test_the_release_pins_one_series_and_the_dockerfiles_default_to_it() -> None:
    assert (R.kolla, R.kolla_ansible, R.debian_suite) == ("23.0.0", "23.0.0", "trixie")
    assert R.ansible_core.startswith("2.20.")  # kolla-ansible 23's prechecks: 2.20 .. 2.21
    assert R.tag() == "2026.2-debian-trixie"  # kolla-ansible 23's default openstack_tag
    # The Dockerfiles' own ARG defaults (for a build by hand) are the release's pins.
    images = discover(REPO / "containers")
    for name in ("kolla_deployer", "kolla_builder"):
        text = images[name].dockerfile.read_text(encoding="utf-8")
        for arg, value in R.build_args().items():
            declared = re.findall(rf"^ARG {arg}=(\S+)$", text, re.MULTILINE)
            assert set(declared) <= {value}, (name, arg, declared)
        assert images[name].uses_arg("KOLLA_BASE")
    with pytest.raises(ConfigError) as err:
        release("2024.1")
    assert err.value.hint == f"set kolla.release to one of: {', '.join(RELEASES)}"


def test_kolla_base_is_the_release_suite_beside_images_base() -> None:
    images = site().images
    assert images.base_for("bookworm") == "kpc/base:bookworm"
    assert images.base_for("trixie") == "kpc/base:trixie"
    other = site(images={"base": "registry.local:5000/kpc/base:v1", "debian_suite": "bookworm"})
    assert other.images.base_for("trixie") == "registry.local:5000/kpc/base:trixie"


def test_sets_and_names() -> None:
    minimal = choose(SETS, [], None, default="minimal")
    assert "keystone-api" in minimal and "mariadb-server" in minimal
    assert "nova-api" not in minimal
    assert choose(SETS, [], "core")[: len(minimal)] == minimal
    assert choose(SETS, ["memcached", "memcached", "cron"], None) == ["memcached", "cron"]
    assert source_sections(SETS, minimal) == {"keystone-base": "keystone==30.0.0"}
    assert not needs_python(["cron", "memcached"])  # no constraints, no sdists to fetch
    assert needs_python(["cron", "kolla-toolbox"])
    with pytest.raises(UsageError, match="fluentd: needs fluent-package"):
        choose(SETS, ["fluentd"], None)
    with pytest.raises(UsageError, match="not a Kolla image name: Keystone;rm"):
        choose(SETS, ["Keystone;rm"], None)
    with pytest.raises(UsageError, match="names or --set, not both"):
        choose(SETS, ["cron"], "core")
    with pytest.raises(UsageError, match="no image set 'all'"):
        choose(SETS, [], "all")


def test_kolla_build_conf_keeps_everything_local() -> None:
    conf = recipe.build_conf(
        R,
        base_image="kpc/kolla-source-base",
        base_tag="abc",
        image_namespace="kpc-kolla-abc",
        threads=2,
        pip_index="https://pypi.example/simple",
        sources=["keystone-base"],
    )
    lines = conf.splitlines()
    for expected in (
        "base_image = kpc/kolla-source-base",
        "namespace = kpc-kolla-abc",
        "tag = 2026.2-debian-trixie",
        "pull = false",
        "push = false",
        "skip_existing = true",
        "threads = 2",
        "pip_index_url = https://pypi.example/simple",
        "location = /kpc-build/src/keystone-base.tar.gz",
        "location = /kpc-build/src/requirements",
    ):
        assert expected in lines
    assert not any(word in conf for word in ("opendev", "github", "http://", "quay"))
    assert conf.count("type = local") == 4
    assert "enabled = false" not in conf
    with_core = recipe.build_conf(
        R, base_image="b", base_tag="t", image_namespace="n", threads=1, pip_index="i",
        sources=["nova-base"], plugins_off=SETS.plugins_off,
    )  # fmt: skip
    sections = with_core.split("\n\n")
    assert "[nova-base-plugin-blazar]\nenabled = false" in sections
    assert "[neutron-base-plugin-networking-sfc]\nenabled = false" in sections
    assert recipe.regex(["keystone-api", "cron"]) == r"^(keystone\-api|cron)$"


def test_repos_yaml_marks_every_third_party_repository_as_distro() -> None:
    import yaml

    data = yaml.safe_load(recipe.repos_yaml())
    assert data["debian"]["mariadb"] == {"distro": True}
    assert set(data["debian"]) >= {"erlang", "rabbitmq", "proxysql", "docker-ce", "fluentd"}
    assert set(data["deb"]) == {"grafana", "opensearch", "opensearch-dashboards"}


def test_overrides_get_the_sites_mirror_and_no_outside_address() -> None:
    template = (REPO / "kolla" / "build" / "template-overrides.j2").read_text(encoding="utf-8")
    text = recipe.overrides(template, "http://mirror.example/debian/", "trixie")
    assert recipe.SOURCES_PLACEHOLDER not in text
    assert "'URIs: http://mirror.example/debian'" in text
    assert "'Suites: trixie trixie-updates'" in text
    assert "'URIs: http://mirror.example/debian-security'" in text
    plain = recipe.debian_sources("http://mirror.example/pool", "trixie")
    assert not any("security" in line for line in plain)  # not laid out like deb.debian.org
    assert not re.search(r"https?://(?!mirror\.example)", text)


def test_the_content_hash_changes_with_each_input_and_only_then() -> None:
    files = {"template-overrides.j2": b"x", "ca.pem": b"ca"}
    inputs = recipe.Inputs(R, SETS, "sha256:1", "http://m/debian", "https://p/simple", files)
    same = recipe.Inputs(R, SETS, "sha256:1", "http://m/debian", "https://p/simple", dict(files))
    assert inputs.digest() == same.digest()
    changed = [
        dataclasses.replace(inputs, base_id="sha256:2"),
        dataclasses.replace(inputs, debian_mirror="http://n/debian"),
        dataclasses.replace(inputs, files={**files, "ca.pem": b"other"}),
        dataclasses.replace(inputs, release=dataclasses.replace(R, kolla="23.0.1")),
    ]
    assert len({inputs.digest(), *(c.digest() for c in changed)}) == 5
    assert recipe.namespace("kpc", inputs.digest()) == f"kpc-kolla-{inputs.digest()[:12]}"


def test_kolla_build_output_is_read_per_image() -> None:
    started = buildout.event(
        "INFO:kolla.common.utils.keystone-api:Building started at 2026-11-29 01:00:00.1"
    )
    assert started == buildout.Event("keystone-api", "started", started.text if started else "")
    built = buildout.event(
        "INFO:kolla.common.utils.cron:Built at 2026-11-29 01:00:05 (took 0:01:02.500000)"
    )
    assert built is not None and built.kind == "built"
    assert buildout.seconds(built.text) == 62.5
    failed = buildout.event("ERROR:kolla.common.utils.memcached:Error'd with the following")
    assert failed is not None and (failed.image, failed.kind) == ("memcached", "error")
    assert buildout.event("INFO:kolla.common.utils:Found the container image(s)") is None
    summary = buildout.summary(
        '{"built": [{"name": "cron"}], "failed": [{"name": "base", "status": "error"},'
        ' {"name": "memcached", "status": "parent_error"}], "skipped": [{"name": "x"}]}'
    )
    assert summary.built == ("cron",)
    assert summary.failed == {"base": "error", "memcached": "parent_error"}
    assert summary.skipped == ("x",)
    step, tail = buildout.failed_step(
        [
            "INFO:kolla.common.utils.base:Step 5/30 : RUN apt-get update",
            "INFO:kolla.common.utils.base: ---> Running in 1234",
            "INFO:kolla.common.utils.base:Step 6/30 : RUN apt-get -y install nothing-here",
            "INFO:kolla.common.utils.base:\x1b[91mE: Unable to locate package nothing-here",
            "ERROR:kolla.common.utils.base:Error'd with the following message",
            "ERROR:kolla.common.utils.base:The command '/bin/sh -c apt-get -y install "
            "nothing-here' returned a non-zero code: 100",
        ]
    )
    assert step == "RUN apt-get -y install nothing-here"
    assert tail[-1].endswith("returned a non-zero code: 100")
    assert not any("\x1b" in line for line in tail)


def test_openrc_checks_say_how_to_get_one(tmp_path: Path) -> None:
    path = tmp_path / "admin-openrc.sh"
    with pytest.raises(ConfigError, match="does not exist") as err:
        check_openrc(path)
    assert "kpc kolla post-deploy" in (err.value.hint or "")
    path.write_text("export OS_AUTH_URL=http://x:5000\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="does not export OS_USERNAME, OS_PASSWORD"):
        check_openrc(path)
    path.write_text(
        "export OS_AUTH_URL=http://x\nexport OS_USERNAME=admin\nexport OS_PASSWORD='s3cret'\n",
        encoding="utf-8",
    )
    path.chmod(0o644)
    check_openrc(path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_openstack_runs_in_the_deployer_with_the_openrc_sourced_not_on_the_command_line() -> None:
    config = site(kolla={"config_dir": "/etc/kpc/kolla"}, images={"prefix": "kpcx"})
    argv = run_argv(openstack_call(config, ["token", "issue"]))
    assert "--volume" in argv and "/etc/kpc/kolla:/etc/kolla:ro" in argv
    assert argv[-6:] == [
        "sh", "-c", '. /etc/kolla/admin-openrc.sh && exec openstack "$@"', "openstack",
        "token", "issue",
    ]  # fmt: skip
    assert not any("OS_PASSWORD" in a for a in argv)


def test_post_deploy_credentials_are_made_private(tmp_path: Path) -> None:
    for name in ("admin-openrc.sh", "public-openrc-system.sh", "clouds.yaml", "globals.yml"):
        (tmp_path / name).write_text("x", encoding="utf-8")
        (tmp_path / name).chmod(0o644)
    found = private_files(tmp_path)
    assert [p.name for p in found] == [
        "admin-openrc.sh", "clouds.yaml", "public-openrc-system.sh"
    ]  # fmt: skip
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in found)
    assert (tmp_path / "globals.yml").stat().st_mode & 0o777 == 0o644


def _constraints_module() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "kpc_constraints", REPO / "kolla" / "build" / "kpc_constraints.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_constraints_cover_what_the_service_images_add_to_their_sdists(tmp_path: Path) -> None:
    # glance-base pip-installs glance_store[...,s3] beside glance: resolved without it, the
    # constraints pinned a python-dateutil no boto3 accepts and the image could not build
    mod: Any = _constraints_module()
    docker_dir = tmp_path / "docker"
    templates = {
        "glance/glance-base": "{% set glance_base_pip_packages = [\n    '/glance',\n"
        "    'glance_store[cinder,vmware,swift,s3]'\n] %}\n",
        "keystone/keystone-base": "{% set keystone_base_pip_packages = [\n"
        "    '/keystone[ldap]',\n] %}\n",
        "keystone/keystone-api": "{% set keystone_pip_packages = [\n    'requests-kerberos',\n"
        "] %}\n{% set keystone_plugins_pip_packages = [\n    '/plugins/*',\n] %}\n",
        "neutron/neutron-base": "{% set neutron_base_pip_packages = [\n    '/neutron',\n"
        "    'oslo-vmware',\n] %}\n",
        "neutron/neutron-mlnx-agent": "{% set x_pip_packages = [\n    'networking-mlnx',\n] %}",
    }
    for name, text in templates.items():
        (docker_dir / name).mkdir(parents=True)
        (docker_dir / name / "Dockerfile.j2").write_text(text, encoding="utf-8")
    sdists = ["/s/glance-base.tar.gz", "/s/keystone-base.tar.gz", "/s/neutron-base.tar.gz"]
    images = ["keystone-api", "glance-api", "neutron-server"]
    found = mod.service_requirements(docker_dir, sdists, images)
    assert found == [
        "glance_store[cinder,vmware,swift,s3]",
        "requests-kerberos",
        "/s/keystone-base.tar.gz[ldap]",  # the sdist itself, with the extra
        "oslo-vmware",
    ]  # networking-mlnx: its image is not built; /plugins/*: not on PyPI


def test_a_failure_names_the_images_own_parent_and_a_build_kolla_abandoned(tmp_path: Path) -> None:
    from appliance.kolla.imagebuild import KOLLA_BUILD_LOG, _why

    logs = tmp_path
    (logs / "glance-base.log").write_text(
        "INFO:kolla.common.utils.glance-base:Step 5/18 : RUN pip install glance_store\n"
        "ERROR:kolla.common.utils.glance-base:ERROR: ResolutionImpossible\n",
        encoding="utf-8",
    )
    (logs / "nova-base.log").write_text("INFO:...:Building started at 20:51\n", encoding="utf-8")
    (logs / KOLLA_BUILD_LOG).write_text(
        "ERROR:kolla.image.build:Unhandled error when running BuildTask(nova-base)\n"
        "requests.exceptions.ConnectionError: tarballs.opendev.org: Name or service not known\n",
        encoding="utf-8",
    )
    result = buildout.Summary(
        built=("heat-api",),
        failed={"glance-base": "error", "nova-base": "building", "nova-api": "matched",
                "glance-api": "matched"},
        skipped=(), unbuildable=(),
    )  # fmt: skip
    nova = _why("nova-api", result, logs)
    assert nova.startswith("not built: a parent image failed (nova-base kolla-build stopped")
    assert "glance" not in nova  # not nova-api's parent
    assert "ConnectionError: tarballs.opendev.org" in nova
    glance = _why("glance-api", result, logs)
    assert "(glance-base failed at step 'RUN pip install glance_store'" in glance
    assert "nova" not in glance
    assert "stopped while building it" in _why("nova-base", result, logs)


def test_the_report_lists_the_plugins_built_without_only_for_their_service() -> None:
    from appliance.kolla.imagebuild import ImageResult, _finish

    def report(*names: str) -> dict[str, str]:
        images = tuple(ImageResult(n, "built", 1.0, None) for n in names)
        done = _finish(
            site(), None, SETS, "ab" * 32, "kpc-kolla-abab", Path("/nonexistent"), images,  # type: ignore[arg-type]
            {}, False, None, 0.0,  # type: ignore[arg-type]
        )  # fmt: skip
        return done.unbuildable

    assert "proxysql" in report("cron")
    assert not any("plugin" in name for name in report("cron", "keystone-api"))
    nova = report("nova-api")
    assert nova["nova-base-plugin-blazar"].startswith("kolla's optional plugin")
    assert "neutron-base-plugin-networking-sfc" not in nova
    assert "neutron-server-plugin-neutron-dynamic-routing" in report("neutron-server")
