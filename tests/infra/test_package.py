"""What ships: the layers hold (and the check would catch a break), `pip install .` gives a
working command line without the dev stack, and the Functions deployment carries only the
app and its runtime dependencies (issue 16)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=tree,
        env={"PATH": str(BIN), "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_package(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(
        ROOT / "replicator", tree / "replicator", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("domain/filters.py", "from replicator.adapters.azure import queue", "layers"),
        ("domain/model.py", "import httpx", "the domain is pure"),
        ("adapters/oci/paging.py", "from replicator.adapters.acr import roles", "the OCI engine"),
        ("adapters/azure/queue.py", "from replicator.app import service", "layers"),
        ("cli/copy.py", "import devstack.demo", "never imports the dev stack"),
    ],
)
def test_the_layer_check_fails_on_a_planted_import(
    tmp_path: Path, module: str, planted: str, broken: str
) -> None:
    tree = _copy_package(tmp_path)
    if broken.startswith("never"):
        (tree / "devstack").mkdir()
        (tree / "devstack" / "__init__.py").write_text("")
        (tree / "devstack" / "demo.py").write_text("")
    target = tree / "replicator" / module
    target.write_text(target.read_text() + f"\n{planted}  # planted\n")
    found = _lint_imports(tree)
    assert found.returncode != 0, found.stdout
    assert f"{broken}" in found.stdout and "BROKEN" in found.stdout
    importer = "replicator." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> " in found.stdout  # the report names the planted import


def test_the_layers_hold_on_the_tree_as_it_is(tmp_path: Path) -> None:
    found = _lint_imports(_copy_package(tmp_path))
    assert found.returncode == 0, found.stdout
    assert "0 broken" in found.stdout


def _deployed_files() -> set[str]:
    """The files the Functions deployment carries: tracked, less what .funcignore names
    (matched by git's own ignore rules, the syntax .funcignore shares)."""

    def listed(*extra: str) -> set[str]:
        out = subprocess.run(
            ["git", "ls-files", "--cached", *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return set(out.split())

    return listed() - listed("--ignored", "--exclude-from=.funcignore")


def test_the_deployment_carries_the_app_and_nothing_of_the_dev_stack() -> None:
    deployed = _deployed_files()
    assert {"function_app.py", "host.json", "requirements.txt"} <= deployed
    assert "replicator/adapters/acr/roles.json" in deployed
    assert "replicator/functions/triggers.py" in deployed
    python = {f for f in deployed if f.endswith(".py")}
    assert python, deployed
    strays = {f for f in python if f != "function_app.py" and not f.startswith("replicator/")}
    assert not strays, f"modules outside the app would be deployed: {sorted(strays)}"
    for unwanted in ("devstack/", "tests/", "bench/", "docs/", "infra/", ".github/"):
        assert not {f for f in deployed if f.startswith(unwanted)}, unwanted
    # the dev requirements stay home: the platform installs requirements.txt only
    assert "requirements-dev.txt" not in deployed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install .`` (not editable) into a clean venv, its dependencies from the
    ranges pyproject.toml declares; returns the venv."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    build = tmp_path_factory.mktemp("build")
    shutil.copytree(
        ROOT,
        build / "src",
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", "__pycache__", "*.egg-info", "build", ".*_cache"
        ),
    )
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "."],
        cwd=build / "src",
        check=True,
        timeout=900,
    )
    return venv


def _run_installed(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "acr-replicator"), *args],
        cwd=cwd,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_pip_install_gives_a_working_command_line(installed: Path, tmp_path: Path) -> None:
    found = _run_installed(installed, "--help", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    for command in ("copy", "sync", "diff", "doctor", "demo"):
        assert command in found.stdout
    usage = _run_installed(installed, "diff", "--source", "a.example", cwd=tmp_path)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_the_installed_package_holds_no_dev_stack(installed: Path, tmp_path: Path) -> None:
    (site,) = installed.glob("lib/python3*/site-packages")
    assert (site / "replicator" / "adapters" / "acr" / "roles.json").is_file()
    for unwanted in ("devstack", "tests", "bench"):
        assert not (site / unwanted).exists(), unwanted
    demo = _run_installed(installed, "demo", cwd=tmp_path)
    assert demo.returncode == 2
    assert demo.stderr.strip().count("\n") == 0, demo.stderr  # one line
    assert "make demo" in demo.stderr and "Traceback" not in demo.stderr
