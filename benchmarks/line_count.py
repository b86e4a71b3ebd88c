#!/usr/bin/env python3
"""Count the lines of ``trio_culler/`` at a git revision: physical lines and logical lines.

A *physical* line is what ``wc -l`` counts. A *logical* line is a physical line that holds at least one token of
code: blank lines, comment-only lines and the lines of docstrings (any statement that is only a string literal,
at the top of a module, class or function or anywhere else) are not counted; a statement spread over several lines
counts each line it spans. Logical lines are the figure to compare between revisions: they do not move when
comments or docstrings are added or removed.

The files are read from git (``git show REV:path``), not from the work tree, so any commit can be measured without
checking it out. Usage::

    python benchmarks/line_count.py [REV] [--per-file] [--against BASE] [--path trio_culler]

It prints, for the ``.py`` files under ``--path`` at ``REV`` (default ``HEAD``), the logical and physical totals,
the logical total without ``testing/``, and with ``--per-file`` one line per file (logical, physical, path).
``--against BASE`` prints, before that, each file whose logical lines differ between ``BASE`` and ``REV`` (a file
that exists in only one of them counts 0 in the other), and the totals of both.
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import tokenize

# Tokens that never make a line count: layout and comments.
_NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers of every statement that is only a string literal (docstrings and bare strings)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            end = node.end_lineno if node.end_lineno is not None else node.lineno
            lines.update(range(node.lineno, end + 1))
    return lines


def logical_lines(source: str) -> int:
    """The number of logical lines of ``source`` (0 for a file that does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return 0
    docstrings = docstring_lines(tree)
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in _NOT_CODE:
            continue
        lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def python_files(revision: str, path: str) -> list[str]:
    names = git("ls-tree", "-r", "--name-only", revision, "--", path).splitlines()
    return sorted(name for name in names if name.endswith(".py"))


def counts(revision: str, path: str) -> dict[str, tuple[int, int]]:
    """``{file: (logical, physical)}`` for the ``.py`` files under ``path`` at ``revision``."""
    found = {}
    for name in python_files(revision, path):
        source = git("show", f"{revision}:{name}")
        found[name] = (logical_lines(source), source.count("\n"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("revision", nargs="?", default="HEAD", help="the git revision to count (default: HEAD)")
    parser.add_argument("--per-file", action="store_true", help="also print one line per file")
    parser.add_argument("--against", metavar="BASE", help="also print the files whose logical lines differ from BASE")
    parser.add_argument("--path", default="trio_culler", help="the folder to count (default: trio_culler)")
    args = parser.parse_args()

    found = counts(args.revision, args.path)
    if args.against:
        base = counts(args.against, args.path)
        for name in sorted(base.keys() | found.keys()):
            before, after = base.get(name, (0, 0))[0], found.get(name, (0, 0))[0]
            if before != after:
                print(f"{before:6} -> {after:6}  {name}")
        print(f"{args.against}: {sum(logical for logical, _ in base.values())} logical lines")
    logical_total = physical_total = without_testing = 0
    for name, (logical, physical) in found.items():
        logical_total += logical
        physical_total += physical
        if "/testing/" not in name:
            without_testing += logical
        if args.per_file:
            print(f"{logical:6} {physical:6}  {name}")
    print(
        f"{args.revision}: {logical_total} logical lines ({without_testing} without testing/), "
        f"{physical_total} physical lines"
    )


if __name__ == "__main__":
    main()
