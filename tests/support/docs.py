"""Reading docs/*.md for the tests that keep the recipes true: code blocks, the culler command lines in them,
and a stand-in for traitlets' ``c`` to execute ``jupyterhub_config.py`` snippets.

A code block is *marked* by an HTML comment on the line before its fence, ``<!-- test: NAME -->``; the tests
find the examples they run by that name, so that a recipe can be reworded freely but not lost.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import attrs

from trio_culler._options import OPTIONS

from .processes import REPO, TOKEN

__all__ = [
    "DOCS",
    "CodeBlock",
    "FakeTraitletsConfig",
    "code_blocks",
    "culler_argvs",
    "dashed_literals",
    "inline_options",
    "marked_block",
    "module_args",
]

DOCS = REPO / "docs"
#: Module names that run a culler after ``python -m``; the old one too, since its command lines must carry over.
CULLER_MODULES = ("trio_culler", "jupyterhub_idle_culler")
CULLER_PROGRAMS = ("trio-culler", "jupyterhub-idle-culler")
#: A container image of this project, as named in a ``docker run`` line or a Kubernetes manifest.
IMAGE = re.compile(r"^(?:[\w.:-]+/)*trio-culler(?::[\w.-]+)?$")
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"^<!--\s*test:\s*([\w-]+)\s*-->\s*$")
_INLINE_OPTION = re.compile(r"`(--[A-Za-z][^`\s]*)`")
_SHELL_OPERATORS = frozenset({"|", "||", "&&", ";", "&", ">", ">>", "<"})
#: ``docker run`` options that take no value (every other option without ``=`` takes the next word).
_CONTAINER_RUN_SWITCHES = frozenset({"--rm", "-d", "--detach", "-i", "-t", "-it", "-ti", "--init", "--read-only"})
SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console"})


@attrs.frozen
class CodeBlock:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def doc_files() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def code_blocks(path: Path) -> list[CodeBlock]:
    blocks: list[CodeBlock] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        if index >= len(lines):
            raise AssertionError(f"{path}:{start + 1}: code block never closed")
        marker = _MARKER.match(lines[start - 1]) if start else None
        blocks.append(
            CodeBlock(path, start + 1, fence.group(1).lower(), "\n".join(body) + "\n", marker and marker.group(1))
        )
        index += 1
    return blocks


def all_blocks() -> Iterator[CodeBlock]:
    for path in doc_files():
        yield from code_blocks(path)


def marked_block(name: str) -> CodeBlock:
    found = [block for block in all_blocks() if block.marker == name]
    if len(found) != 1:
        raise AssertionError(f"expected one code block marked <!-- test: {name} --> in docs/, found {len(found)}")
    return found[0]


def inline_options(path: Path) -> list[str]:
    """Inline code spans outside code blocks that start with ``--``, e.g. ``--dry-run``, ``--timeout=600``."""
    text = path.read_text(encoding="utf-8")
    outside = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return _INLINE_OPTION.findall(outside)


def module_args(words: list[str]) -> list[str] | None:
    """The culler's options in a ``[python, -m, trio_culler, ...]`` command (as JupyterHub's services take it)."""
    for index in range(1, len(words) - 1):
        if words[index] == "-m" and words[index + 1] in CULLER_MODULES:
            return words[index + 2 :]
    return None


def _shell_command_args(words: list[str]) -> list[str] | None:
    while words and (re.match(r"^[A-Za-z_]\w*=", words[0]) or words[0] in ("exec", "sudo")):
        words = words[1:]
    if not words:
        return None
    if os.path.basename(words[0]) in CULLER_PROGRAMS:
        return words[1:]
    if os.path.basename(words[0]).startswith("python"):
        return module_args(words)
    if words[0] in ("docker", "podman") and words[1:2] == ["run"]:
        # The image is the first word that is neither an option nor an option's value.
        index = 2
        while index < len(words) and words[index].startswith("-"):
            takes_value = "=" not in words[index] and words[index] not in _CONTAINER_RUN_SWITCHES
            index += 2 if takes_value else 1
        if index < len(words) and IMAGE.match(words[index]):
            return words[index + 1 :]
    return None


def _shell_argvs(text: str) -> list[list[str]]:
    argvs: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, ";"]:
            if word not in _SHELL_OPERATORS:
                command.append(word)
                continue
            args = _shell_command_args(command)
            if args is not None:
                argvs.append(args)
            command = []
    return argvs


def _yaml_argvs(node: Any, argvs: list[list[str]]) -> None:
    if isinstance(node, dict):
        image = node.get("image")
        if isinstance(image, str) and IMAGE.match(image) and "command" not in node:
            argvs.append([str(arg) for arg in node.get("args", [])])
        for value in node.values():
            _yaml_argvs(value, argvs)
    elif isinstance(node, list):
        words = [str(item) for item in node]
        args = module_args(words)
        if args is not None:
            argvs.append(args)
        else:
            for item in node:
                _yaml_argvs(item, argvs)


def load_yaml(text: str) -> Any:
    import pytest

    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(text)


class FakeTraitletsConfig:
    """Enough of traitlets' ``c`` for the snippets: ``c.Section.name = value``, and ``c.JupyterHub.services`` /
    ``load_roles`` start as empty lists (traitlets' lazy values accept ``append`` the same way)."""

    def __init__(self) -> None:
        self._sections: dict[str, SimpleNamespace] = {}

    def __getattr__(self, name: str) -> SimpleNamespace:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._sections.setdefault(name, SimpleNamespace(services=[], load_roles=[]))


def exec_hub_config(block: CodeBlock) -> SimpleNamespace:
    """Execute a ``jupyterhub_config.py`` snippet; returns ``c.JupyterHub``.

    ``TRIO_CULLER_TOKEN``, which the standalone recipe reads, is :data:`TOKEN` while it runs, and
    ``PROMETHEUS_HUB_TOKEN`` (the metrics recipe's) another token."""
    c = FakeTraitletsConfig()
    namespace = {"c": c, "get_config": lambda: c, "__name__": "__config__"}
    with mock.patch.dict(os.environ, {"TRIO_CULLER_TOKEN": TOKEN, "PROMETHEUS_HUB_TOKEN": f"prometheus-{TOKEN}"}):
        exec(compile(block.text, block.where, "exec"), namespace)
    return c.JupyterHub


def dashed_literals(block: CodeBlock) -> list[str]:
    """Every ``--word`` in the block that is a whole string (Python literal, YAML scalar or shell word)."""
    if block.language in ("yaml", "yml"):
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)
            elif isinstance(node, str) and node.startswith("--"):
                found.append(node)

        walk(load_yaml(block.text))
        return found
    if block.language == "python":
        return re.findall(r"""["'](--[^"']*)["']""", block.text)
    if block.language in SHELL_LANGUAGES:
        # Other programs' options (docker --tag, pip --no-cache-dir) are fine; a word that names one of the
        # culler's options must belong to a culler command line.
        words = shlex.split(block.text.replace("\\\n", " "), comments=True)
        return [word for word in words if word.startswith("--") and _is_culler_option(word)]
    return []


def _is_culler_option(word: str) -> bool:
    name = word[2:].partition("=")[0].replace("_", "-").removeprefix("IdleCuller.")
    return name in OPTIONS or (name.startswith("no-") and name[3:] in OPTIONS)


def culler_argvs(block: CodeBlock) -> list[list[str]]:
    """The culler command lines in a block: the options after the program, module or image name."""
    if block.language in SHELL_LANGUAGES:
        return _shell_argvs(block.text)
    if block.language in ("yaml", "yml"):
        argvs: list[list[str]] = []
        _yaml_argvs(load_yaml(block.text), argvs)
        return argvs
    if block.language == "python" and "c.JupyterHub" in block.text:
        hub = exec_hub_config(block)
        commands = [service.get("command") for service in hub.services]
        return [args for command in commands if command for args in [module_args(list(command))] if args is not None]
    return []
