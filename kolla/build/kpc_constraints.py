"""Write an upper-constraints.txt for kolla's images from PyPI (runs in kpc's builder).

OpenStack's own upper-constraints.txt lives in opendev git and tarballs.opendev.org, which an
offline site cannot reach, and no PyPI package ships it. So kpc resolves exactly what the
images will pip-install (openstack-base's and kolla-toolbox's package lists, read from the
installed kolla's templates, plus the OpenStack service sdists), on the same Python as the
images, and pins every resolved distribution as name===version.

    python3 kpc_constraints.py OUT.txt SDIST...     (with kolla importable)
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


def main(out: Path, sdists: list[str]) -> int:
    docker_dir = templates()
    base = pip_list(docker_dir / "openstack-base" / "Dockerfile.j2", "openstack_base_pip_packages")
    toolbox = pip_list(docker_dir / "kolla-toolbox" / "Dockerfile.j2", "kolla_toolbox_pip_packages")
    services = {Path(s).name.split("-")[0].lower() for s in sdists}
    with tempfile.TemporaryDirectory() as tmp:
        pins = resolve(toolbox, Path(tmp) / "toolbox.json")
        pins.update(resolve([*base, *sdists], Path(tmp) / "base.json"))  # openstack-base wins
    lines = [f"{name}==={version}\n" for key, (name, version) in sorted(pins.items())
             if key not in services]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines), encoding="utf-8")
    print(f"{len(lines)} pins written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))
