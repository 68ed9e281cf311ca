"""The integration's pure modules (codec, protocol), loaded without Home Assistant.

Importing ``custom_components.xiaozhi.protocol.codec`` the usual way runs the package's
``__init__``, which imports Home Assistant and the OpenAI SDK. The simulator must run
against any Home Assistant from a machine that has only aiohttp, PyAV and numpy,
and start quickly, so ``codec.py`` and ``protocol.py`` (which import neither) are
loaded straight from their files, under private module names. The simulator thus
encodes, decodes and frames audio with exactly the code the integration uses.
"""

import importlib.util
from pathlib import Path
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Final

__all__ = ["INTEGRATION_DIR", "codec", "load_integration_module", "protocol"]

INTEGRATION_DIR: Final = (
    Path(__file__).resolve().parent.parent / "custom_components" / "xiaozhi"
)


def load_integration_module(name: str) -> ModuleType:
    """Return the integration's module ``name`` loaded from its file.

    Loaded once, as ``simulator._xiaozhi_<name>``; the module must not import
    siblings relatively (``codec`` and ``protocol`` import nothing of the package).

    Raises:
        ImportError: No such file.
    """
    qualified = f"{__package__}._xiaozhi_{name.replace('/', '_')}"
    if (module := sys.modules.get(qualified)) is not None:
        return module
    path = INTEGRATION_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ImportError(f"cannot load {path}", name=qualified, path=str(path))
    module = importlib.util.module_from_spec(spec)
    # Registered before running: dataclasses look their module up while it loads.
    sys.modules[qualified] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[qualified]
        raise
    return module


if TYPE_CHECKING:
    from custom_components.xiaozhi.protocol import codec, messages as protocol
else:
    codec = load_integration_module("protocol/codec")
    protocol = load_integration_module("protocol/messages")
