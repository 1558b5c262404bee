#!/usr/bin/env python3
"""Checks the crate's shape (issue 11, docs/ARCHITECTURE.md):

- imports run downward only: a module names modules of its own layer or of
  the layers below it (app > edge > ops > keys > backends > primitives);
- no circle between the modules of one layer;
- no file in src/ or benches/ over the line limit (generated code lives in
  OUT_DIR and is not in the tree);
- every `src/....rs` path the docs name exists.

It reads `crate::` and `super::` paths from the code (comments stripped),
so it needs nothing but Python. Exit status 1 with one line per finding.
Run with --self-test to see each rule catch a planted violation.
"""

import re
import sys
from pathlib import Path

LAYERS = ["primitives", "backends", "keys", "ops", "edge", "app"]
# Generated protobuf code and the descriptor set: any layer may name them.
GENERATED = {"pb", "FILE_DESCRIPTOR_SET"}
LINE_LIMIT = 450

COMMENT = re.compile(r"//[^\n]*")
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
# `use crate::{a::b, c}` / `use super::{x, y::z}`: one level of braces.
GROUP = re.compile(r"\b(crate|super)::\{([^{}]*)\}")


def module_of(path: Path, src: Path) -> list[str]:
    """src/keys/seal.rs -> ['keys', 'seal']; src/keys.rs -> ['keys']."""
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return parts


def test_only_files(src: Path) -> set[Path]:
    """Files declared as `#[cfg(test)] mod name;`: tests may reach anywhere."""
    out = set()
    for f in src.rglob("*.rs"):
        text = f.read_text()
        for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text):
            name = m.group(1)
            base = f.with_suffix("") if f.stem not in ("mod", "lib") else f.parent
            for cand in (base / f"{name}.rs", base / name / "mod.rs"):
                if cand.exists():
                    out.add(cand)
                    out.update((cand.with_suffix("")).rglob("*.rs"))
    return out


def strip_tests(text: str) -> str:
    """Drops inline `#[cfg(test)] mod … { … }` blocks, brace-balanced
    (tests may import from anywhere; code after them is still read)."""
    head = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\s+\w+\s*\{")
    while (m := head.search(text)) is not None:
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        text = text[: m.start()] + text[i:]
    return text


def references(text: str, here: list[str]) -> list[list[str]]:
    """Absolute module paths named by `crate::` and `super::` paths."""
    text = strip_tests(COMMENT.sub("", text))
    found = []

    def resolve(root: str, rest: list[str]) -> list[str] | None:
        if root == "crate":
            return rest
        base = here[:-1]
        while rest and rest[0] == "super":
            rest = rest[1:]
            base = base[:-1]
        return base + rest

    for m in GROUP.finditer(text):
        for item in m.group(2).split(","):
            item = item.strip()
            if not item or item == "self":
                continue
            head = [p for p in re.split(r"::", item.split(" as ")[0]) if p and p != "{"]
            if head:
                r = resolve(m.group(1), [p for p in head if re.fullmatch(r"\w+", p)])
                if r:
                    found.append(r)
    for m in PATH.finditer(text):
        rest = [p for p in m.group(2).split("::") if p]
        r = resolve(m.group(1), rest)
        if r:
            found.append(r)
    return found


def check(root: Path) -> list[str]:
    src = root / "src"
    findings = []
    tests = test_only_files(src)
    edges: dict[str, set[str]] = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(root)
        here = module_of(f, src)
        if f in tests or not here or here[0] in ("main", "bin"):
            continue
        if here[0] not in LAYERS:
            findings.append(f"{rel}: module {here[0]!r} is in no layer ({', '.join(LAYERS)})")
            continue
        mine = LAYERS.index(here[0])
        for target in references(f.read_text(), here):
            top = target[0] if target else ""
            if top in GENERATED or top not in LAYERS:
                continue
            theirs = LAYERS.index(top)
            if theirs > mine:
                findings.append(
                    f"{rel}: imports upward, {'::'.join(here)} ({here[0]}) names "
                    f"{'::'.join(target)} ({top})"
                )
            elif theirs == mine and len(here) > 1 and len(target) > 1:
                a, b = "::".join(here[:2]), "::".join(target[:2])
                if a != b:
                    edges.setdefault(a, set()).add(b)
    for cycle in cycles(edges):
        findings.append("import circle: " + " -> ".join(cycle + [cycle[0]]))
    for base in ("src", "benches"):
        for f in sorted((root / base).rglob("*.rs")):
            n = len(f.read_text().splitlines())
            if n > LINE_LIMIT:
                findings.append(f"{f.relative_to(root)}: {n} lines, over the limit of {LINE_LIMIT}")
    for doc in sorted([root / "README.md", *(root / "docs").glob("*.md")]):
        for m in re.finditer(r"\b(src/[\w/.-]+\.rs)\b", doc.read_text()):
            if not (root / m.group(1)).exists():
                findings.append(f"{doc.relative_to(root)}: names {m.group(1)}, which does not exist")
    return findings


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def self_test(root: Path) -> int:
    """Plants each kind of violation in a copy of src/ and expects a finding."""
    import shutil
    import tempfile

    plants = {
        "upward": ("src/primitives/record.rs", "\nuse crate::keys::Error;\n", "imports upward"),
        "circle": ("src/keys/limits.rs", "\nuse super::seal::Sealed;\n", "import circle"),
        "length": ("src/keys/limits.rs", "\n" * (LINE_LIMIT + 1), "over the limit"),
        "doc path": ("docs/API.md", "\n`src/no_such_file.rs`\n", "does not exist"),
    }
    failed = 0
    for name, (file, text, expect) in plants.items():
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp)
            for part in ("src", "benches", "docs"):
                shutil.copytree(root / part, copy / part)
            shutil.copy(root / "README.md", copy / "README.md")
            # Appended, after any test module: code there must still be read.
            with open(copy / file, "a") as f:
                f.write(text)
            hits = [x for x in check(copy) if expect in x]
            print(f"self-test {name}: {'caught' if hits else 'MISSED'}")
            failed += not hits
    return failed


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    if "--self-test" in sys.argv:
        return 1 if self_test(root) else 0
    findings = check(root)
    for f in findings:
        print(f)
    if findings:
        print(f"check-layers: {len(findings)} findings", file=sys.stderr)
        return 1
    print(f"check-layers: imports run downward through {' < '.join(LAYERS)}; no circles; "
          f"no file over {LINE_LIMIT} lines; every src/ path in the docs exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
