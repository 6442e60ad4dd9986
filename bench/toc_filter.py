"""Filter `pg_restore -l` output for one target: keep what belongs there, comment out the rest.

Usage: python toc_filter.py <core|ai> <objects.json> < toc.list > target.list

objects.json names, per target, the source's tables, indexes, constraints and sequences that go
there (written by bench.contenders before any clock starts). An entry is dropped when it names an
object of the other target; core also drops the `vector` extension and its comment. Standard
library only: it runs inside the timed pg_dump/pg_restore contender.
"""

from __future__ import annotations

import json
import sys

# Descriptions of several words come first: "TABLE DATA" before "TABLE".
_DESCS = (
    "TABLE DATA",
    "SEQUENCE SET",
    "SEQUENCE OWNED BY",
    "FK CONSTRAINT",
    "INDEX ATTACH",
    "DEFAULT ACL",
    "TABLE",
    "INDEX",
    "CONSTRAINT",
    "SEQUENCE",
    "COMMENT",
    "EXTENSION",
    "TRIGGER",
    "DEFAULT",
    "ACL",
    "STATISTICS DATA",
    "STATISTICS",
    "POLICY",
    "RULE",
)


def keep(line: str, target: str, other: dict[str, set[str]]) -> bool:
    if line.startswith(";") or ";" not in line:
        return True
    body = line.split(";", 1)[1].split(None, 2)
    if len(body) < 3:
        return True
    rest = body[2]
    desc = next((d for d in _DESCS if rest.startswith(d + " ")), None)
    if desc is None:
        return True
    # schema, then the tag's words, then the owner (absent for some entries): read by position.
    words = rest[len(desc) + 1 :].split()
    if len(words) < 2:
        return True
    first = words[1]
    if desc == "EXTENSION":
        return not (target == "core" and first == "vector")
    if desc == "COMMENT":
        if len(words) < 3:
            return True
        if first == "EXTENSION":
            return not (target == "core" and words[2] == "vector")
        if first in ("TABLE", "COLUMN"):
            return words[2].split(".")[0] not in other["tables"]
        return True
    if desc in ("TABLE", "TABLE DATA", "STATISTICS DATA"):
        return first not in other["tables"]
    if desc == "INDEX":
        return first not in other["indexes"]
    if desc in ("SEQUENCE", "SEQUENCE SET", "SEQUENCE OWNED BY"):
        return first not in other["sequences"]
    if desc in ("CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "DEFAULT", "POLICY", "RULE"):
        return first not in other["tables"]
    return True


def main() -> int:
    target, objects_file = sys.argv[1], sys.argv[2]
    with open(objects_file) as handle:
        objects = json.load(handle)
    other_name = "ai" if target == "core" else "core"
    other = {kind: set(names) for kind, names in objects[other_name].items()}
    for line in sys.stdin:
        sys.stdout.write(line if keep(line.rstrip("\n"), target, other) else ";" + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
