"""The hostile situations the test suite tries, per store kind: a table counted from pytest.

    python benchmarks/hostile_table.py            # markdown table on stdout (~15 s: collection)

Runs `python -m pytest --collect-only -q` over the hostile files and sorts each collected case
into a store kind (grid, refinement, grid with snapshots, or none: refused before any store)
and a kind of situation, by the test's name and parameters.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    "tests/test_hostile.py",
    "tests/test_integrity_store_kinds.py",
    "tests/test_integrity.py",
    "tests/test_cli_one_line.py",
    "tests/test_train_checkpoint.py",
    "tests/test_launcher.py",
]
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


def collect() -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    if out.returncode != 0 or not ids:
        sys.exit(f"collection failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return ids


def kind_of(node: str) -> str:
    file, _, rest = node.partition("::")
    name, _, param = rest.rstrip("]").partition("[")
    if file.endswith("test_integrity_store_kinds.py"):
        first = param.split("-")[0]
        return PREFIX.get(first, "no store")  # the migration case: a format-1 store
    if "refinement" in name:
        return "refinement"
    if file.endswith("test_integrity.py"):
        return "snapshots"  # its store: relu and absval, with snapshots
    if re.search(r"hostile_setting|root_empty|slurm_without", name):
        return "no store"
    return "grid"


def situation_of(node: str) -> str:
    name = node.partition("::")[2].partition("[")[0]
    for pattern, what in SITUATIONS:
        if re.search(pattern, name):
            return what
    return "other"


def main() -> None:
    ids = collect()
    table = Counter((situation_of(i), kind_of(i)) for i in ids)
    rows = [what for _, what in SITUATIONS] + ["other"]
    print("| situation | " + " | ".join(KINDS) + " | all |")
    print("|---|" + "---|" * (len(KINDS) + 1))
    for what in rows:
        counts = [table[(what, k)] for k in KINDS]
        if sum(counts):
            print(f"| {what} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    totals = [sum(table[(w, k)] for w in rows) for k in KINDS]
    print("| **all** | " + " | ".join(f"**{t}**" for t in totals) + f" | **{len(ids)}** |")
    print(f"\n{len(ids)} cases collected from {len(FILES)} files ({', '.join(FILES)}).")


if __name__ == "__main__":
    main()
