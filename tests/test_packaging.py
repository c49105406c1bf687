"""The wheel a user installs: LICENSE, metadata, the console script and the dashboards."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP = (sys.executable, "-m", "pip", "-q")


def test_the_installed_wheel_ships_license_metadata_and_dashboards(tmp_path: Path) -> None:
    built = subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), ROOT],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [metadata] = [name for name in names if name.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
        [scripts] = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(scripts).decode()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "License-Expression: MIT" in meta
    assert "Classifier: Typing :: Typed" in meta
    assert "Provides-Extra: langgraph" in meta
    assert "toolkit = toolkit.cli:main" in entry_points
    shipped = {path.name for path in (ROOT / "dashboards").iterdir()}
    assert {f"toolkit/dashboards/{name}" for name in shipped} <= names

    # Installed away from the checkout, the command finds them as package data.
    site = tmp_path / "site"
    subprocess.run(
        [*PIP, "install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import toolkit; print(toolkit.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site))  # the installed copy, not the checkout
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "dashboards", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {path.name for path in out.iterdir()} == shipped
