"""Install the Ansible collections of a Galaxy requirements.yml from PyPI's 'ansible' wheels.

Runs inside kolla's kolla-toolbox build (Galaxy is unreachable offline). For each collection
it takes the newest version that satisfies the requirement's version range, searching the
'ansible' bundle releases newest first (one wheel download per bundle, only as needed).

    python3 kpc_collections.py REQUIREMENTS.yml DEST
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml
from pip._vendor.packaging.specifiers import SpecifierSet
from pip._vendor.packaging.version import Version

BUNDLES = ("14", "13", "12", "11", "10")  # 'ansible' major versions, newest first


def wanted(requirements: Path) -> dict[str, SpecifierSet]:
    data = yaml.safe_load(requirements.read_text(encoding="utf-8"))
    found = {}
    for item in data.get("collections") or []:
        spec = str(item.get("version") or "").replace(" ", "")
        found[item["name"]] = SpecifierSet(",".join(p for p in spec.split(",") if p))
    return found


def main(requirements: Path, dest: Path) -> int:
    missing = wanted(requirements)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for bundle in BUNDLES:
            if not missing:
                break
            where = Path(tmp) / bundle
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(where),
                 f"ansible=={bundle}.*"],
                check=True,
            )  # fmt: skip
            wheel = zipfile.ZipFile(next(where.glob("ansible-*.whl")))
            names = wheel.namelist()
            for name, spec in sorted(missing.items()):
                prefix = "ansible_collections/{}/{}/".format(*name.split("."))
                if prefix + "MANIFEST.json" not in names:
                    continue
                info = json.loads(wheel.read(prefix + "MANIFEST.json"))["collection_info"]
                if Version(info["version"]) not in spec:
                    continue
                for member in names:
                    if member.startswith(prefix):
                        wheel.extract(member, dest)
                print(f"{name} {info['version']} from ansible {bundle}", flush=True)
                del missing[name]
            (where / Path(wheel.filename or "").name).unlink(missing_ok=True)
    if missing:
        print("no PyPI 'ansible' bundle has: " + ", ".join(
            f"{n} {s}" for n, s in sorted(missing.items())), file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
