"""The protocol code and the simulator import without Home Assistant or OpenAI.

HACS ships only ``custom_components/xiaozhi``, so the protocol package lives in
it; programs that talk to devices (the simulator, the benchmarks' devices, third
parties) must be able to import it on a machine without Home Assistant.
"""

from pathlib import Path
import subprocess
import sys

import custom_components.xiaozhi as package

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(package.__file__).parent
STANDALONE_PACKAGES = ("protocol", "sentences")

# Runs in a fresh interpreter that refuses to import Home Assistant and OpenAI.
REFUSING_IMPORTS = """
import importlib, importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("homeassistant", "openai"):
            raise ImportError(f"{name} must not be imported here")
        return None

sys.meta_path.insert(0, Refuse())
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def standalone_modules() -> list[str]:
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for folder in STANDALONE_PACKAGES
        for path in sorted((PACKAGE / folder).glob("*.py"))
    ]
    # simulator/__main__.py runs the simulator: importing it is running it.
    simulator = sorted((ROOT / "simulator").glob("[!_]*.py"))
    return [*modules, "simulator", *(f"simulator.{path.stem}" for path in simulator)]


def test_protocol_text_and_simulator_import_without_home_assistant() -> None:
    modules = standalone_modules()
    assert "custom_components.xiaozhi.protocol.framing" in modules
    assert "simulator.device" in modules
    result = subprocess.run(
        [sys.executable, "-c", REFUSING_IMPORTS, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_refusal_works() -> None:
    result = subprocess.run(
        [sys.executable, "-c", REFUSING_IMPORTS, "custom_components.xiaozhi.tts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "must not be imported here" in result.stderr
