"""Shared output of the benchmark scripts: a JSON file after every
calculation (so an interrupted run keeps its results) and, at the end, the
printed table also written as PREFIX.txt."""
import json
import sys
from pathlib import Path


def write_report(out_prefix, payload, lines, final):
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(str(prefix) + ".json").write_text(json.dumps(payload, indent=2) + "\n")
    if final:
        text = "\n".join(lines) + "\n"
        Path(str(prefix) + ".txt").write_text(text)
        print()
        print(text, end="")
        sys.stdout.flush()
