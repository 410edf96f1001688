"""The hostile situations the test suite tries, per store kind: a table counted from pytest.

    python benchmarks/hostile_table.py            # markdown table on stdout (~15 s: collection)

Collects the tests marked `hostile` (tests/conftest.py registers the marker; the cases sit
beside the module they attack, e.g. tests/test_validate.py, test_identity.py, test_writes.py)
and sorts each into a store kind (grid, refinement, grid with snapshots, or none: refused
before any store) and a kind of situation, by the test's name, parameters and fixtures.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("grid", "refinement", "snapshots", "no store")  # no store: refused first, or format 1
# (pattern on the test's name, situation), first match wins
SITUATIONS = [
    (r"hostile_setting|unknown_figure|slurm_without|root_empty|settings_from", "bad settings"),
    (
        r"damage|damaged|lost_metadata|record_does_not_know|corrupt_checkpoint|trains_nothing",
        "damage to arrays",
    ),
    (r"flag", "flags flipped or set without data"),
    (r"edited|changed_setting|run_id_but|another_run", "edited config, changed settings"),
    (r"nested|inside|around", "nesting"),
    (r"killed|interrupt|stale_job", "signals, killed and stale runs"),
    (r"unwritable|full_disk|read_only|ends_in_one_line", "unwritable outputs, one line"),
    (r"format_1|migrat", "format 1, migration"),
    (r"store_state|symlink|odd_path|overwrite_keeps", "store paths and states"),
]
# Situations of test_integrity_store_kinds.py found in the parameter id: (kind prefix, our name)
PREFIX = {"grid": "grid", "refine": "refinement", "snapshots": "snapshots"}


class _Collected:
    """A pytest plugin that keeps each collected case's node id and fixture names."""

    def __init__(self) -> None:
        self.cases: list[tuple[str, frozenset[str]]] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.cases = [
            (item.nodeid, frozenset(getattr(item, "fixturenames", ()))) for item in session.items
        ]


def collect() -> list[tuple[str, frozenset[str]]]:
    """(node id, fixture names) of every test marked `hostile`, collected in this process."""
    plugin = _Collected()
    args = ["--collect-only", "-q", "-m", "hostile", "-n0", "-p", "no:cacheprovider", "tests"]
    os.chdir(ROOT)  # as `python -m pytest` from the root: tests import `tests.conftest`
    sys.path.insert(0, str(ROOT))
    with contextlib.redirect_stdout(io.StringIO()) as out:  # pytest's listing, not the table's
        code = pytest.main(args, plugins=[plugin])
    if code != 0 or not plugin.cases:
        sys.exit(f"collection failed (pytest exit {code}):\n{out.getvalue()[-3000:]}")
    return plugin.cases


def kind_of(node: str, fixtures: frozenset[str]) -> str:
    file, _, rest = node.partition("::")
    name, _, param = rest.rstrip("]").partition("[")
    if file.endswith("test_integrity_store_kinds.py"):
        first = param.split("-")[0]
        return PREFIX.get(first, "no store")  # the migration case: a format-1 store
    if "refinement" in name:
        return "refinement"
    if re.search(r"hostile_setting|root_empty|slurm_without", name):
        return "no store"
    if "finished" in fixtures:
        return "grid"  # tests/conftest.py's finished grid store (and test_cli_one_line's own)
    if file.endswith("test_integrity.py"):
        return "snapshots"  # its store: relu and absval, with snapshots
    return "grid"


def situation_of(node: str) -> str:
    name = node.partition("::")[2].partition("[")[0]
    for pattern, what in SITUATIONS:
        if re.search(pattern, name):
            return what
    return "other"


def main() -> None:
    cases = collect()
    table = Counter((situation_of(node), kind_of(node, fixtures)) for node, fixtures in cases)
    files = sorted({node.partition("::")[0] for node, _ in cases})
    rows = [what for _, what in SITUATIONS] + ["other"]
    print("| situation | " + " | ".join(KINDS) + " | all |")
    print("|---|" + "---|" * (len(KINDS) + 1))
    for what in rows:
        counts = [table[(what, k)] for k in KINDS]
        if sum(counts):
            print(f"| {what} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    totals = [sum(table[(w, k)] for w in rows) for k in KINDS]
    print("| **all** | " + " | ".join(f"**{t}**" for t in totals) + f" | **{len(cases)}** |")
    print(f"\n{len(cases)} cases marked hostile in {len(files)} files ({', '.join(files)}).")


if __name__ == "__main__":
    main()
