"""The integration's shipped translations, as the tests read them."""

import json
from pathlib import Path

import custom_components.xiaozhi

TRANSLATIONS_DIR = Path(custom_components.xiaozhi.__file__).parent / "translations"


def message(key: str, language: str = "en", **placeholders: str) -> str:
    """Return the translated message the agent should say."""
    translations = json.loads((TRANSLATIONS_DIR / f"{language}.json").read_text())
    text: str = translations["exceptions"][key]["message"]
    return text.format(**placeholders)
