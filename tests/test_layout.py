"""The map of DESIGN §1 holds: one installed name, and imports that point down only.

Read from the source (every ``import`` statement, including those inside
functions and ``TYPE_CHECKING`` blocks), so a lazy import that would break the
layering in a rarely run path fails here too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Repository folder -> the name it is installed as (pyproject.toml's package-dir).
LAYERS = {
    "ocapd": "ocapd",
    "captp": "ocapd.captp",
    "workers": "ocapd.workers",
    "daemon": "ocapd.daemon",
    "gateway": "ocapd.gateway",
    "chat_host": "ocapd.chat_host",
    "examples": "ocapd.examples",
}

#: What each part may import of ours (itself always). DESIGN §1.
ALLOWED = {
    "ocapd.captp": set(),
    "ocapd.workers": {"ocapd.captp"},
    "ocapd.daemon": {"ocapd.captp", "ocapd.workers"},
    "ocapd.gateway": {"ocapd.daemon", "ocapd.captp"},
    "ocapd.chat_host": {"ocapd.daemon", "ocapd.captp"},
    # Weblet code (the examples) programs against the SDK only.
    "ocapd.examples": {"ocapd.sdk"},
    "ocapd.sdk": {"ocapd.captp"},
    # The composition root: everything.
    "ocapd": {"ocapd.captp", "ocapd.workers", "ocapd.daemon", "ocapd.gateway", "ocapd.chat_host", "ocapd.examples", "ocapd.sdk"},
}

OLD_NAMES = {"captp", "daemon", "workers", "gateway", "chat_host", "examples"}


def _part(module: str) -> str:
    """The layer a dotted ocapd module name belongs to (the key of ALLOWED)."""
    parts = module.split(".")
    if len(parts) >= 2 and f"ocapd.{parts[1]}" in ALLOWED:
        return f"ocapd.{parts[1]}"
    return "ocapd"


def _modules() -> list[tuple[Path, str]]:
    """Every Python file of the distribution, with its installed module name."""
    found = []
    for folder, name in LAYERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found.append((path, ".".join([name, *parts])))
    return found


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from ocapd import captp` imports the layer ocapd.captp.
            if target == "ocapd":
                out += [(node.lineno, f"ocapd.{alias.name}") for alias in node.names]
    return out


def test_every_layer_imports_only_what_design_allows() -> None:
    wrong = []
    for path, module in _modules():
        here = "ocapd.sdk" if module == "ocapd.sdk" else _part(module)
        for line, target in _imports(path, module):
            top = target.split(".")[0]
            if top in OLD_NAMES:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {target} by its old bare name")
                continue
            if top != "ocapd" or target == "ocapd":
                continue
            there = "ocapd.sdk" if target == "ocapd.sdk" else _part(target)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{path.relative_to(REPO)}:{line} ({here}) imports {target} ({there})")
    assert wrong == []


def test_tests_and_benchmarks_import_the_layers_by_their_installed_names() -> None:
    wrong = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for line, target in _imports(path, "tests"):
            if target.split(".")[0] in OLD_NAMES:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert wrong == []


def test_the_old_bare_names_are_not_importable(tmp_path: Path) -> None:
    """From outside the checkout, only ``ocapd`` is there: ``import daemon`` must not find ours."""
    probe = f"import importlib.util, json; print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in {sorted(OLD_NAMES)!r}}}))"
    found = subprocess.run([sys.executable, "-P", "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(found.stdout) == {name: False for name in OLD_NAMES}


def test_importing_all_of_ocapd_loads_each_module_once_under_its_ocapd_name(tmp_path: Path) -> None:
    """Two copies of one module would mean two ``Far`` classes: no module may load under a bare name."""
    names = sorted(module for _, module in _modules() if not module.endswith("__main__"))
    probe = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(OLD_NAMES)!r})))\n"
    )
    loaded = subprocess.run([sys.executable, "-P", "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == []


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_each_layer_names_its_purpose_in_its_package_docstring(folder: str) -> None:
    init = REPO / folder / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and len(doc.split()) > 5, f"{folder}/__init__.py says what the layer is for"


def test_every_package_folder_is_in_the_distribution() -> None:
    """A sub-package missing from pyproject's explicit list works in a checkout and is absent from the wheel."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in LAYERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    assert found - listed == set()

