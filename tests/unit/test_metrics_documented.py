"""Every Prometheus metric the node defines is documented in docs/operators.md (issue 17:
three were not, among them the only signal for clock trouble)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Counter("meshnode_x", ...), Gauge(\n "meshnode_y", ...): a metric's definition.
DEFINITION = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*"
                        r"[\"'](meshnode_[a-z0-9_]+)[\"']")


def defined_metrics() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "meshnode").rglob("*.py"):
        names.update(DEFINITION.findall(path.read_text(encoding="utf-8")))
    return names


def test_every_metric_in_the_code_is_in_operators_md() -> None:
    names = defined_metrics()
    assert "meshnode_changes_rejected" in names and len(names) > 30  # the scan works
    doc = (ROOT / "docs" / "operators.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names
                     if not re.search(rf"`{n}(_total|_bucket)?(\{{[^`]*\}})?`", doc))
    assert not missing, f"metrics missing from docs/operators.md: {missing}"
