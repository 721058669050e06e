"""The code in the documentation runs, and its commands are the CLI's.

Every page of ``docs/`` (MyST Markdown) is read top to bottom and its blocks are run in
order, in a fresh temporary folder per page:

* ```` ```python ```` blocks run with ``exec`` in one namespace per page (so a page's
  later blocks see its earlier ones), with the folder as the working directory;
* ```` ```bash ```` blocks: every ``descend ...`` command in them (also ``python -m
  descend ...`` and ``torchrun ... -m descend ...``) is parsed by the CLI's own argument
  parser, so a renamed flag or command fails here; a ``descend train`` command is also
  resolved into its config (``--print-config``, which builds nothing), so a renamed config
  key, model option or bundled config fails too. Blocks preceded by the MyST comment
  ``% docs-test: run`` are run for real (in-process, ``descend.cli.main``), which is why
  those commands use tiny budgets.

Other MyST comments a page may hold, each on the line before a block:

* ``% docs-test: file NAME``: the block's text is written to ``NAME`` (a config the
  page's commands then use);
* ``% docs-test: skip REASON``: the block is not run (the page must say why, in words the
  reader sees; the REASON here is for the test log);

and anywhere in the page:

* ``% docs-test: uses runs/first``: the page starts with a copy of ``runs/first``, the
  small run that docs/getting-started.md trains (trained once per test session);
* ``% docs-test: requires MODULE ...``: skip the page when a module is missing.

README.md's python blocks are examples at full scale (minutes of training), so only
their ``import`` statements are run and the rest is compiled; its commands are parsed and
resolved like the pages' (a command shown failing, followed by its ``descend: error:``
line, must fail with that message).
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from descend import cli, experiments

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README = REPO / "README.md"
GETTING_STARTED = DOCS / "getting-started.md"

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
MARKER = re.compile(r"^%\s*docs-test:\s*(?P<what>\w+)\s*(?P<rest>.*)$")
SHELL = ("bash", "sh", "shell", "console", "")
PYTHON = ("python", "py", "python3")


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the block's first line of code in the page
    marker: tuple[str, str] | None  # ("run", ""), ("file", "NAME"), ("skip", "REASON")


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the docs-test marker before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip()
        lang = info.split()[0].lower() if info else ""
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and not lines[j].strip().strip(fence[0])):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mk = MARKER.match(lines[k].strip()) if k >= 0 else None
        marker = (mk["what"], mk["rest"].strip()) if mk else None
        body = [ln[len(m["indent"]):] if ln.startswith(m["indent"]) else ln for ln in lines[i + 1 : j]]
        out.append(Block(lang, "\n".join(body) + "\n", i + 2, marker))
        i = j + 1
    return out


def page_markers(path: Path, what: str) -> list[str]:
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = MARKER.match(line.strip())
        if m and m["what"] == what:
            found.append(m["rest"].strip())
    return found


# ----------------------------------------------------------------------------- commands
@dataclass
class Command:
    argv: list[str]  # the arguments after "descend"
    output: list[str]  # lines shown after a "$ " command (its expected output)
    line: int


def commands(block: Block) -> list[Command]:
    """The descend commands of a shell block (``descend``, ``python -m descend``, ``torchrun ... -m descend``).

    In a block that shows ``$ `` prompts, only prompted lines are commands and the lines
    after one are its output; elsewhere every line is. ``\\`` continues a line; ``&&``
    separates commands; ``#`` starts a comment.
    """
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for n, raw in enumerate(block.text.splitlines()):
        if not pending:
            start = block.line + n
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        logical.append((start, (pending + raw).strip()))
        pending = ""
    prompts = any(text.startswith("$ ") for _, text in logical)
    found: list[Command] = []
    for line_no, text in logical:
        if prompts and not text.startswith("$ "):
            if found and text:
                found[-1].output.append(text)
            continue
        for piece in text.removeprefix("$ ").split("&&"):
            try:
                tokens = shlex.split(piece, comments=True)
            except ValueError:  # prose with an apostrophe in an unlabelled block
                continue
            argv = _descend_argv(tokens)
            if argv is not None:
                found.append(Command(argv, [], line_no))
            elif prompts and found:  # a prompted command that is not descend's: its output is not ours
                found.append(Command([], [], line_no))
    return [c for c in found if c.argv]


def _descend_argv(tokens: list[str]) -> list[str] | None:
    if not tokens:
        return None
    if tokens[0] == "descend":
        return tokens[1:]
    if tokens[0] in ("python", "python3") and tokens[1:3] == ["-m", "descend"]:
        return tokens[3:]
    if tokens[0] == "torchrun" and "-m" in tokens:
        i = tokens.index("-m")
        if tokens[i + 1 : i + 2] == ["descend"]:
            return tokens[i + 2 :]
    return None


def is_synopsis(argv: list[str]) -> bool:
    """``descend experiment NAME [--budget cpu|full]``: a usage line, not a command."""
    return any(t.startswith("[") or "|" in t or t == "..." for t in argv)


def call_cli(argv: list[str]) -> tuple[int, str, str]:
    """``descend ARGV`` in this process: (exit status, stdout, stderr)."""
    logger = logging.getLogger("descend")
    handlers, level = list(logger.handlers), logger.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse: a bad flag or value
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        logger.handlers[:], logger.level = handlers, level
    return code, out.getvalue(), err.getvalue()


def check_command(cmd: Command, where: str) -> None:
    """Parse ``descend ARGV`` with the CLI's parser; resolve a ``train`` command's config."""
    argv = cmd.argv
    if not argv or argv[0].startswith("-") or is_synopsis(argv):
        if argv and argv[0] == "--version":
            assert call_cli(argv)[0] == 0, where
        return
    if argv[0] == "experiment":
        rest = [a for a in argv[1:] if not a.startswith("-")]
        if "--list" in argv or not rest or rest[0].isupper():
            return
        assert rest[0] in experiments.names(), f"{where}: no experiment named {rest[0]!r}"
        if "--budget" in argv:
            assert argv[argv.index("--budget") + 1] in ("cpu", "full"), where
        return
    parser = cli._parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `descend {shlex.join(argv)}` is refused by the CLI's parser:\n{err.getvalue()}")
    expected_error = next((o for o in cmd.output if o.startswith("descend: error:")), None)
    if args.command == "train" and not args.resume and (args.config is None or _config_exists(args.config)):
        code, _, stderr = call_cli([*argv, "--print-config"])
        if expected_error:
            shown = expected_error.split("...")[0].rstrip(" ,")
            assert code == 2 and stderr.startswith(shown), f"{where}: expected {expected_error!r}, got {stderr!r}"
        else:
            assert code == 0, f"{where}: `descend {shlex.join(argv)}` does not resolve to a config:\n{stderr}"


def _config_exists(name: str) -> bool:
    from descend.config import bundled

    return Path(name).is_file() or name.removesuffix(".toml") in bundled()


def run_command(cmd: Command, where: str) -> None:
    argv = cmd.argv
    assert "--nproc" not in argv, f"{where}: a block marked to run must not start processes"
    code, stdout, stderr = call_cli(argv)
    assert code == 0, f"{where}: `descend {shlex.join(argv)}` exited with {code}:\n{stdout}\n{stderr}"


# ----------------------------------------------------------------------------- pages
def run_page(path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every block of a page in order, in ``folder``."""
    for module in page_markers(path, "requires"):
        for name in module.split():
            pytest.importorskip(name, reason=f"{path.name} needs {name}")
    monkeypatch.chdir(folder)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks(path):
        where = f"{path.relative_to(REPO)}:{block.line}"
        what, rest = block.marker or ("", "")
        if what == "skip":
            assert rest, f"{where}: a skipped block needs a reason"
            continue
        if what == "file":
            (folder / rest).write_text(block.text, encoding="utf-8")
            continue
        if block.lang in PYTHON:
            code = compile("\n" * (block.line - 1) + block.text, str(path), "exec")
            with torch.random.fork_rng():
                exec(code, namespace)
        elif block.lang in SHELL:
            for cmd in commands(block):
                (run_command if what == "run" else check_command)(cmd, f"{path.relative_to(REPO)}:{cmd.line}")


def doc_pages() -> list[Path]:
    if not DOCS.is_dir():
        return []
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)


@pytest.fixture(scope="session")
def first_run(tmp_path_factory) -> Path:
    """The folder in which docs/getting-started.md ran: it holds ``runs/first``."""
    folder = tmp_path_factory.mktemp("getting-started")
    with pytest.MonkeyPatch.context() as mp:
        run_page(GETTING_STARTED, folder, mp)
    assert (folder / "runs" / "first" / "model.safetensors").is_file(), "getting-started.md trains runs/first"
    return folder


@pytest.mark.parametrize("path", doc_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> None:
    if path == GETTING_STARTED:
        request.getfixturevalue("first_run")  # runs the page
        return
    if "runs/first" in page_markers(path, "uses"):
        shutil.copytree(request.getfixturevalue("first_run") / "runs" / "first", tmp_path / "runs" / "first")
    run_page(path, tmp_path, monkeypatch)


def test_docs_have_pages() -> None:
    """The pages this test is meant to run exist (a moved folder would otherwise pass silently)."""
    pages = {p.relative_to(DOCS).as_posix() for p in doc_pages()}
    assert {"getting-started.md", "howto/index.md"} <= pages


def test_readme() -> None:
    """README.md: python blocks compile and their imports run; its descend commands parse and resolve."""
    for block in blocks(README):
        where = f"README.md:{block.line}"
        if block.lang in PYTHON:
            tree = ast.parse(block.text, filename=where)
            imports = ast.Module([node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))], [])
            exec(compile(imports, where, "exec"), {"__name__": "__readme__"})
        elif block.lang in SHELL:
            for cmd in commands(block):
                check_command(cmd, f"README.md:{cmd.line}")


# ----------------------------------------------------------------------------- the reader
def test_blocks_and_commands_are_read_as_written(tmp_path: Path) -> None:
    """The block and command reader on a page written here (markers, continuations, prompts)."""
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n% docs-test: run\n```bash\ndescend train --epochs 1 \\\n  --set data.limit=10  # tiny\n```\n\n"
        "```python\nx = 1\n```\n\n```console\n$ descend train --set train.epochz=3\n"
        "descend: error: unknown config key\n```\n\n```bash\npip install -e . && python -m descend --version\n"
        "torchrun --standalone --nproc-per-node 2 -m descend train --set train.epochs=12\n```\n",
        encoding="utf-8")
    got = blocks(page)
    assert [(b.lang, b.line, b.marker) for b in got] == [
        ("bash", 5, ("run", "")), ("python", 10, None), ("console", 14, None), ("bash", 19, None)]
    assert [(c.argv, c.line) for c in commands(got[0])] == [
        (["train", "--epochs", "1", "--set", "data.limit=10"], 5)]
    [failing] = commands(got[2])
    assert failing.argv == ["train", "--set", "train.epochz=3"]
    assert failing.output == ["descend: error: unknown config key"]
    assert [c.argv for c in commands(got[3])] == [["--version"], ["train", "--set", "train.epochs=12"]]
    assert is_synopsis(["experiment", "NAME", "[--budget", "cpu|full]"])
    assert not is_synopsis(["train", "--set", "model.hidden=[100]"])


def test_a_renamed_flag_fails() -> None:
    """The check is not vacuous: a flag the CLI does not have, or a config key it does not know, fails."""
    with pytest.raises(pytest.fail.Exception, match="refused by the CLI's parser"):
        check_command(Command(["train", "--epochz", "3"], [], 1), "here")
    with pytest.raises(AssertionError, match="does not resolve to a config"):
        check_command(Command(["train", "--set", "train.epochz=3"], [], 1), "here")
