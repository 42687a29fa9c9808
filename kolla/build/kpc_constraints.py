"""Write an upper-constraints.txt for kolla's images from PyPI (runs in kpc's builder).

OpenStack's own upper-constraints.txt lives in opendev git and tarballs.opendev.org, which an
offline site cannot reach, and no PyPI package ships it. So kpc resolves exactly what the
images will pip-install (openstack-base's and kolla-toolbox's package lists, read from the
installed kolla's templates, plus the OpenStack service sdists with what the service images
add to them, e.g. glance-base's ``glance_store[cinder,vmware,swift,s3]``), on the same Python
as the images, and pins every resolved distribution as name===version. Every package an
image pip-installs must be in one resolution: a package left out is pip-installed against
pins made without it, and pip may have no version that fits them (boto3 needs a
python-dateutil below 3, which a resolution without it need not pick).

    python3 kpc_constraints.py OUT.txt SDIST... [--images NAME,...]   (with kolla importable)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path


def pip_list(template: Path, variable: str) -> list[str]:
    text = template.read_text(encoding="utf-8")
    block = text[text.index(f"{variable} = [") :]
    end = re.search(r"\n\s*\]", block)
    block = block[: end.start() if end else len(block)]
    return re.findall(r"'([^']+)'", block)


def image_packages(text: str) -> list[str]:
    """Every entry of a Dockerfile template's ``*_pip_packages`` lists, in order."""
    found: list[str] = []
    for match in re.finditer(r"_pip_packages = \[(.*?)\n\s*\]", text, re.DOTALL):
        found += re.findall(r"'([^']+)'", match.group(1))
    return found


def requirement(entry: str, sdists: dict[str, str]) -> str | None:
    """A template's pip entry as a requirement to resolve: ``/keystone[ldap]`` is the keystone
    sdist with its ldap extra; other local paths (``/plugins/*``) are not on PyPI."""
    if not entry.startswith("/"):
        return entry
    match = re.fullmatch(r"/([a-z_]+)(\[[a-z0-9_,-]+\])?", entry)
    if match and match.group(1) in sdists:
        return sdists[match.group(1)] + (match.group(2) or "")
    return None


def service_requirements(docker_dir: Path, sdists: list[str], images: list[str]) -> list[str]:
    """What the service images add to the sdists, for the images that will be built."""
    by_service = {Path(s).name.split("-")[0].lower(): s for s in sdists}
    found: list[str] = []
    for service in sorted(by_service):
        for name in sorted({f"{service}-base", *(i for i in images if i.startswith(service))}):
            template = docker_dir / service / name / "Dockerfile.j2"
            if template.is_file():
                for entry in image_packages(template.read_text(encoding="utf-8")):
                    wanted = requirement(entry, by_service)
                    if wanted and wanted not in found and wanted not in sdists:
                        found.append(wanted)
    return found


def resolve(packages: list[str], report: Path) -> dict[str, tuple[str, str]]:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed",
         "--report", str(report), "pip", "wheel", "setuptools", *packages],
        check=True,
    )  # fmt: skip
    pins = {}
    for item in json.loads(report.read_text(encoding="utf-8"))["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        pins[name.lower()] = (name, version)
    return pins


def templates() -> Path:
    """kolla's image templates: inside the package (kolla 23), or its data dir (older)."""
    import kolla

    package = Path(kolla.__file__).parent
    for candidate in (package / "docker", package.parents[3] / "share" / "kolla" / "docker"):
        if (candidate / "openstack-base").is_dir():
            return candidate
    raise SystemExit(f"cannot find kolla's docker templates near {package}")


def main(out: Path, sdists: list[str], images: list[str]) -> int:
    docker_dir = templates()
    base = pip_list(docker_dir / "openstack-base" / "Dockerfile.j2", "openstack_base_pip_packages")
    toolbox = pip_list(docker_dir / "kolla-toolbox" / "Dockerfile.j2", "kolla_toolbox_pip_packages")
    services = {Path(s).name.split("-")[0].lower() for s in sdists}
    extra = service_requirements(docker_dir, sdists, images)
    print("resolving with the service images' own packages: " + (", ".join(extra) or "none"))
    with tempfile.TemporaryDirectory() as tmp:
        pins = resolve(toolbox, Path(tmp) / "toolbox.json")
        everything = [*base, *sdists, *extra]
        pins.update(resolve(everything, Path(tmp) / "base.json"))  # openstack-base wins
    lines = [f"{name}==={version}\n" for key, (name, version) in sorted(pins.items())
             if key not in services]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines), encoding="utf-8")
    print(f"{len(lines)} pins written to {out}")
    return 0


if __name__ == "__main__":
    args = sys.argv[2:]
    names: list[str] = []
    if "--images" in args:
        at = args.index("--images")
        names = [n for n in args[at + 1].split(",") if n]
        del args[at : at + 2]
    sys.exit(main(Path(sys.argv[1]), args, names))
