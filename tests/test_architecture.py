"""The integration's import rules, as ARCHITECTURE.md states them, read from the AST.

Every import counts, inside functions and ``if TYPE_CHECKING:`` too: a layer that
imports another for its types still depends on it.
"""

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
import sys

import custom_components.xiaozhi as package

ROOT = Path(package.__file__).parent
PACKAGE = package.__name__  # custom_components.xiaozhi

# What each package may import of the integration (besides itself). Units are
# packages, top-level modules, or transport.base (the seam; see ARCHITECTURE.md).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "sentences": {"protocol"},
    "provider": {"sentences", "protocol", "const", "ha_internals"},
    "device": {"protocol", "const", "transport.base", "ha_internals"},
    "server": {"device", "protocol", "const", "transport.base", "ha_internals"},
    "transport": {"server", "device", "protocol", "const", "ha_internals"},
    "voice": {
        "device",
        "sentences",
        "protocol",
        "const",
        "transport.base",
        "ha_internals",
    },
}
PLATFORMS = frozenset(
    {
        "assist_satellite",
        "binary_sensor",
        "config_flow",
        "conversation",
        "diagnostics",
        "image",
        "number",
        "select",
        "sensor",
        "stt",
        "tts",
    }
)
# Importable without Home Assistant: nothing outside the standard library but these.
STANDALONE = frozenset({"protocol", "sentences"})
# PyAV (Opus) and cryptography (the UDP audio channel's AES) install without Home Assistant.
STANDALONE_THIRD_PARTY = frozenset({"av", "cryptography"})


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted, relative to the integration
    target: str  # the imported module, absolute
    line: int

    def where(self) -> str:
        return f"{self.source.replace('.', '/')}.py:{self.line}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = f"{PACKAGE}.{module}".rstrip(".").split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(path: Path) -> Iterator[Import]:
    module = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, module, path.name == "__init__.py")
            # ``from . import ha_internals``: what is imported are the modules.
            submodules = [f"{target}.{alias.name}" for alias in node.names]
            if all(is_module(name) for name in submodules):
                for name in submodules:
                    yield Import(module, name, node.lineno)
            else:
                yield Import(module, target, node.lineno)


def is_module(target: str) -> bool:
    if internal_unit(target) is None:
        return False
    path = ROOT.joinpath(*unit_path(target))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def unit_path(target: str) -> list[str]:
    """The parts of an integration module's path below the integration."""
    return target.removeprefix(PACKAGE).strip(".").split(".")


def unit_of(module: str) -> str:
    """The layer a module (dotted, relative to the integration) belongs to."""
    parts = module.split(".")
    if parts[:2] == ["transport", "base"]:
        return "transport.base"
    return parts[0] if parts[0] else "__init__"


def integration_imports() -> list[Import]:
    return [found for path in sorted(ROOT.rglob("*.py")) for found in imports_of(path)]


def internal_unit(target: str) -> str | None:
    if target != PACKAGE and not target.startswith(f"{PACKAGE}."):
        return None
    return unit_of(".".join(unit_path(target)))


def allowed_targets(unit: str) -> set[str]:
    """The units a package's module may import (its own package included)."""
    if unit == "transport.base":
        return {unit}  # the seam depends on nothing else of ours
    own = {unit, "transport.base"} if unit == "transport" else {unit}
    return ALLOWED[unit] | own


def test_packages_import_only_the_layers_below_them() -> None:
    wrong = []
    for found in integration_imports():
        source, target = unit_of(found.source), internal_unit(found.target)
        if target is None or not (source in ALLOWED or source == "transport.base"):
            continue
        if target not in allowed_targets(source):
            wrong.append(f"{found.where()}: {source} imports {found.target}")
    assert wrong == []


def test_no_package_imports_a_platform_and_no_platform_another() -> None:
    wrong = []
    for found in integration_imports():
        source, target = unit_of(found.source), internal_unit(found.target)
        if target not in PLATFORMS or target == source:
            continue
        if source in PLATFORMS or source.split(".")[0] in ALLOWED:
            wrong.append(f"{found.where()}: {source} imports {found.target}")
    assert wrong == []


def test_protocol_and_text_import_no_home_assistant_nor_any_io_library() -> None:
    wrong = []
    for found in integration_imports():
        if unit_of(found.source) not in STANDALONE:
            continue
        top = found.target.split(".")[0]
        if internal_unit(found.target) is not None:
            continue
        if top not in sys.stdlib_module_names and top not in STANDALONE_THIRD_PARTY:
            wrong.append(f"{found.where()}: imports {found.target}")
    assert wrong == []


def test_the_rules_know_every_package_and_read_relative_imports() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages == set(ALLOWED)
    modules = {path.stem for path in ROOT.glob("*.py")} - {"__init__"}
    assert modules >= PLATFORMS
    seen = {
        (unit_of(found.source), internal_unit(found.target))
        for found in integration_imports()
    }
    assert ("voice", "device") in seen  # a relative import of another layer
    assert ("assist_satellite", "ha_internals") in seen  # ``from . import x``
    assert ("device", "transport.base") in seen
    assert ("transport.base", None) in seen  # the standard library
