"""Static checks of the integration's metadata, as hassfest and HACS would make them.

Checks manifest.json, hacs.json, that every translation has exactly the keys and
placeholders of strings.json (and en.json equals it), and quality_scale.yaml's schema.
Exits non-zero with one line per problem.
"""

import json
from pathlib import Path
import re
import sys
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
INTEGRATION = ROOT / "custom_components" / "xiaozhi"

MANIFEST_KEYS = {
    "domain",
    "name",
    "codeowners",
    "config_flow",
    "dependencies",
    "documentation",
    "integration_type",
    "iot_class",
    "issue_tracker",
    "requirements",
    "version",
}
IOT_CLASSES = {
    "assumed_state",
    "cloud_polling",
    "cloud_push",
    "local_polling",
    "local_push",
    "calculated",
}
INTEGRATION_TYPES = {
    "device",
    "entity",
    "hardware",
    "helper",
    "hub",
    "service",
    "system",
    "virtual",
}

# Home Assistant's integration quality scale (script/hassfest/quality_scale.py).
QUALITY_RULES = {
    "bronze": [
        "action-setup",
        "appropriate-polling",
        "brands",
        "common-modules",
        "config-flow-test-coverage",
        "config-flow",
        "dependency-transparency",
        "docs-actions",
        "docs-high-level-description",
        "docs-installation-instructions",
        "docs-removal-instructions",
        "entity-event-setup",
        "entity-unique-id",
        "has-entity-name",
        "runtime-data",
        "test-before-configure",
        "test-before-setup",
        "unique-config-entry",
    ],
    "silver": [
        "action-exceptions",
        "config-entry-unloading",
        "docs-configuration-parameters",
        "docs-installation-parameters",
        "entity-unavailable",
        "integration-owner",
        "log-when-unavailable",
        "parallel-updates",
        "reauthentication-flow",
        "test-coverage",
    ],
    "gold": [
        "devices",
        "diagnostics",
        "discovery-update-info",
        "discovery",
        "docs-data-update",
        "docs-examples",
        "docs-known-limitations",
        "docs-supported-devices",
        "docs-supported-functions",
        "docs-troubleshooting",
        "docs-use-cases",
        "dynamic-devices",
        "entity-category",
        "entity-device-class",
        "entity-disabled-by-default",
        "entity-translations",
        "exception-translations",
        "icon-translations",
        "reconfiguration-flow",
        "repair-issues",
        "stale-devices",
    ],
    "platinum": ["async-dependency", "inject-websession", "strict-typing"],
}
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def check_manifest(problems: list[str]) -> None:
    manifest = json.loads((INTEGRATION / "manifest.json").read_text())
    if missing := MANIFEST_KEYS - manifest.keys():
        problems.append(f"manifest.json misses {sorted(missing)}")
    if manifest.get("domain") != INTEGRATION.name:
        problems.append("manifest.json domain must be the folder name")
    if manifest.get("iot_class") not in IOT_CLASSES:
        problems.append(
            f"manifest.json iot_class {manifest.get('iot_class')!r} is not valid"
        )
    if manifest.get("integration_type") not in INTEGRATION_TYPES:
        problems.append("manifest.json integration_type is not valid")
    problems.extend(
        f"manifest.json requirement {requirement!r} is not pinned"
        for requirement in manifest.get("requirements", [])
        if "==" not in requirement
    )
    if manifest.get("dependencies") != sorted(manifest.get("dependencies", [])):
        problems.append("manifest.json dependencies must be sorted")
    keys = [key for key in manifest if key not in ("domain", "name")]
    if keys != sorted(keys):
        problems.append("manifest.json keys after domain and name must be sorted")
    if not re.fullmatch(r"\d+\.\d+\.\d+", str(manifest.get("version", ""))):
        problems.append("manifest.json version must be x.y.z")


def check_hacs(problems: list[str]) -> None:
    hacs = json.loads((ROOT / "hacs.json").read_text())
    if not hacs.get("name"):
        problems.append("hacs.json needs a name")
    if not re.fullmatch(r"\d{4}\.\d{1,2}\.\d+", str(hacs.get("homeassistant", ""))):
        problems.append("hacs.json homeassistant must be a full version like 2026.10.0")
    if hacs.get("render_readme") is not True:
        problems.append("hacs.json should render the README")
    unknown = set(hacs) - {
        "name",
        "homeassistant",
        "render_readme",
        "content_in_root",
        "zip_release",
        "filename",
        "hide_default_branch",
        "country",
        "hacs",
        "persistent_directory",
    }
    if unknown:
        problems.append(f"hacs.json has unknown keys {sorted(unknown)}")


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict):
        flat: dict[str, str] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else key))
        return flat
    return {prefix: str(tree)}


def check_translations(problems: list[str]) -> None:
    strings = flatten(json.loads((INTEGRATION / "strings.json").read_text()))
    english = flatten(
        json.loads((INTEGRATION / "translations" / "en.json").read_text())
    )
    if english != strings:
        problems.append("translations/en.json must equal strings.json")
    for path in sorted((INTEGRATION / "translations").glob("*.json")):
        other = flatten(json.loads(path.read_text()))
        if missing := strings.keys() - other.keys():
            problems.append(f"{path.name} misses {sorted(missing)}")
        if extra := other.keys() - strings.keys():
            problems.append(
                f"{path.name} has keys not in strings.json: {sorted(extra)}"
            )
        for key in strings.keys() & other.keys():
            expected = set(PLACEHOLDER.findall(strings[key]))
            if set(PLACEHOLDER.findall(other[key])) != expected:
                problems.append(
                    f"{path.name} {key} must use placeholders {sorted(expected)}"
                )
            if not other[key].strip():
                problems.append(f"{path.name} {key} is empty")


def check_quality_scale(problems: list[str]) -> None:
    path = INTEGRATION / "quality_scale.yaml"
    if not path.exists():
        problems.append("quality_scale.yaml is missing")
        return
    rules = (yaml.safe_load(path.read_text()) or {}).get("rules") or {}
    known = {rule for tier in QUALITY_RULES.values() for rule in tier}
    if missing := known - rules.keys():
        problems.append(f"quality_scale.yaml misses rules {sorted(missing)}")
    if unknown := rules.keys() - known:
        problems.append(f"quality_scale.yaml has unknown rules {sorted(unknown)}")
    for name, value in rules.items():
        if value in ("done", "todo"):
            continue
        if not (
            isinstance(value, dict)
            and value.get("status") in ("done", "exempt", "todo")
            and (value["status"] == "done" or str(value.get("comment", "")).strip())
        ):
            problems.append(
                f"quality_scale.yaml {name}: use done, todo, or status + comment"
            )


def main() -> int:
    problems: list[str] = []
    for check in (check_manifest, check_hacs, check_translations, check_quality_scale):
        check(problems)
    for problem in problems:
        print(f"validate: {problem}")
    if not problems:
        print(
            "validate: manifest, hacs.json, translations and quality scale are consistent"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
