"""Every ```python block of README.md and docs/*.md runs, and the numbers it shows are checked.

A file's blocks run in order in one namespace, as a reader would type them, in a fresh working
directory. A comment after an expression statement is a claim when it starts with a number, a
bracket, ``array(``, ``~`` (same order of magnitude) or True/False:

    F.softmax(logits)  # [[0.0986, 0.6590, 0.2424]]     the value, to the claim's decimals
    print(report)  # -> val acc                         what the statement prints

Any other comment is prose and is ignored. ``<!-- docs-test: skip (reason) -->`` on the line
right before a fence skips that block.
"""

from __future__ import annotations

import ast
import contextlib
import io
import linecache
import math
import re
import sys
import textwrap
import tokenize
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>.*\S.*)\)\s*-->\s*$")
NUMBER = re.compile(r"[-+]?(?:inf|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
CHECK = "__docs_check__"


@dataclass(frozen=True)
class Block:
    """One fenced python block: ``line`` is the 1-based line of its opening fence."""

    path: str
    line: int
    source: str
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"{self.path}:L{self.line}"


def python_blocks(text: str, path: str) -> list[Block]:
    """The ```python blocks of a Markdown text, with the skip reason of each, if any."""
    lines = text.splitlines()
    blocks: list[Block] = []
    fence = None
    for number, line in enumerate(lines, 1):
        if fence is None:
            match = FENCE.match(line)
            if match:
                fence, indent, start, body = match["fence"], len(match["indent"]), number, []
                language = (match["info"].split() or [""])[0]
        elif line.strip() and set(line.strip()) == {fence[0]} and len(line.strip()) >= len(fence):
            fence = None
            if language == "python":
                before = lines[start - 2] if start >= 2 else ""
                skip = SKIP.match(before)
                if "docs-test" in before and skip is None:
                    raise ValueError(
                        f"{path}:{start - 1}: {before.strip()!r} is not "
                        "'<!-- docs-test: skip (reason) -->'"
                    )
                source = textwrap.dedent("\n".join(body)) + "\n"
                blocks.append(Block(path, start, source, skip and skip["reason"]))
        else:
            # A fence indented by k spaces takes up to k spaces off each line, as CommonMark.
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
    if fence is not None:
        raise ValueError(f"{path}:{start}: the code fence is never closed")
    return blocks


@dataclass(frozen=True)
class Claim:
    """What a comment says a statement gives: numbers, a bool, or printed text."""

    text: str
    numbers: tuple[float, ...] = ()
    decimals: tuple[int, ...] = ()
    approximate: bool = False
    output: str | None = None
    boolean: bool | None = None


def _balanced(text: str) -> str | None:
    """The bracketed prefix of ``text`` (which starts with '[' or '('), or None if unclosed."""
    depth = 0
    for i, char in enumerate(text):
        depth += char in "[("
        depth -= char in "])"
        if depth == 0:
            return text[: i + 1]
    return None


def _decimals(number: str) -> int:
    """Decimal places a written number claims: '0.4170' -> 4, '1e-8' -> 8, '3' -> 0."""
    if number.lstrip("+-") in ("inf", "nan"):
        return 0
    mantissa, _, exponent = number.lower().partition("e")
    _, _, fraction = mantissa.partition(".")
    return len(fraction) - int(exponent or 0)


def parse_claim(comment: str) -> Claim | None:
    """The claim a ``# ...`` comment makes, or None when it is prose."""
    text = comment.lstrip("#").strip()
    if text.startswith("->"):
        return Claim(text, output=text[2:].strip())
    approximate = text.startswith("~")
    literal = text[1:].lstrip() if approximate else text
    if re.match(r"(True|False)\b", literal):
        return Claim(text, boolean=literal.startswith("True"))
    if literal.startswith("array("):
        literal = literal[len("array(") :]
    if literal[:1] in ("[", "("):
        literal = _balanced(literal)
    else:
        match = NUMBER.match(literal)
        literal = match and match.group()
    # A bracket of names, like "(N, C)", is a shape in words, not numbers.
    if not literal or not re.fullmatch(r"[\[\](),\s]*", NUMBER.sub("", literal)):
        return None
    numbers = NUMBER.findall(literal)
    if not numbers:
        return None
    return Claim(
        text,
        numbers=tuple(float(n) for n in numbers),
        decimals=tuple(_decimals(n) for n in numbers),
        approximate=approximate,
    )


def _check_numbers(value: Any, claim: Claim, where: str) -> None:
    message = f"{where}: the comment claims {claim.text!r}, the statement gives {value!r}"
    try:
        computed = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        pytest.fail(f"{message}, which is not numbers")
    assert computed.size == len(claim.numbers), f"{message}: {computed.size} numbers"
    for got, claimed, decimals in zip(computed, claim.numbers, claim.decimals, strict=True):
        if math.isnan(claimed) or math.isinf(claimed):
            assert got == claimed or (math.isnan(got) and math.isnan(claimed)), message
        elif claim.approximate:
            assert got != 0 and abs(math.log10(abs(got) / abs(claimed))) <= 1, message
        else:
            tolerance = 0.5 * 10.0**-decimals * (1 + 1e-9) + 1e-12
            assert abs(got - claimed) <= tolerance, message


def check(thunk: Callable[[], Any], comment: str, where: str) -> None:
    """Evaluate one documented statement and hold it to the claim its comment makes."""
    claim = parse_claim(comment)
    assert claim is not None
    if claim.output is None:
        value = thunk()
        if claim.boolean is None:
            _check_numbers(value, claim, where)
        else:
            assert isinstance(value, (bool, np.bool_)) and value == claim.boolean, (
                f"{where}: the comment claims {claim.text!r}, the statement gives {value!r}"
            )
        return
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        thunk()
    sys.stdout.write(printed.getvalue())
    assert claim.output in printed.getvalue(), (
        f"{where}: the comment claims output containing {claim.output!r}, "
        f"the statement printed {printed.getvalue()!r}"
    )


class _Claims(ast.NodeTransformer):
    """Rewrites ``expr  # claim`` into ``__docs_check__(lambda: expr, "# claim", "file:line")``."""

    def __init__(self, comments: dict[int, str], path: str, line: int) -> None:
        self.comments, self.path, self.line = comments, path, line

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        comment = self.comments.get(node.end_lineno or node.lineno, "")
        if parse_claim(comment) is None:
            return node
        thunk = ast.Lambda(
            args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=node.value,
        )
        where = ast.Constant(f"{self.path}:{self.line + node.lineno}")
        call = ast.Call(ast.Name(CHECK, ast.Load()), [thunk, ast.Constant(comment), where], [])
        return ast.copy_location(ast.Expr(call), node)


def _shift_lines(code: types.CodeType, lines: int) -> types.CodeType:
    """``code`` with its line numbers, and those of the functions it defines, moved down."""
    consts = tuple(
        _shift_lines(c, lines) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_firstlineno=code.co_firstlineno + lines, co_consts=consts)


def compile_block(source: str, path: str, line: int) -> types.CodeType:
    """Code for the block after the fence on ``line``, each claim a check, numbered as the file."""
    filename = f"{path}:{line}"
    try:
        tree = ast.parse(source, filename)
    except SyntaxError as error:
        error.lineno = error.lineno and error.lineno + line
        raise
    comments = {
        token.start[0]: token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    tree = _Claims(comments, path, line).visit(tree)
    # Tracebacks then quote the block's lines, starting at its first (not at the file's first).
    numbered = ["\n"] * line + source.splitlines(True)
    linecache.cache[filename] = (len(source), None, numbered, filename)
    return _shift_lines(compile(ast.fix_missing_locations(tree), filename, "exec"), line)


def new_namespace() -> dict[str, Any]:
    return {"__name__": "__main__", CHECK: check}


def run_block(block: Block, namespace: dict[str, Any]) -> None:
    exec(compile_block(block.source, block.path, block.line), namespace)


BLOCKS = {
    path: python_blocks(doc.read_text(encoding="utf-8"), path)
    for doc in DOCUMENTS
    for path in [doc.relative_to(ROOT).as_posix()]
}


@dataclass
class _FileRun:
    """One document's shared namespace and working directory, and how far it has run."""

    namespace: dict[str, Any]
    directory: Path
    done: int = 0
    failed: str | None = None


_RUNS: dict[str, _FileRun] = {}


@pytest.mark.parametrize(
    ("path", "index"),
    [(path, i) for path, blocks in BLOCKS.items() for i in range(len(blocks))],
    ids=[block.id for blocks in BLOCKS.values() for block in blocks],
)
def test_documented_block_runs_and_its_numbers_hold(path, index, tmp_path_factory, monkeypatch):
    blocks = BLOCKS[path]
    block = blocks[index]
    if block.skip:
        pytest.skip(block.skip)
    run = _RUNS.get(path)
    if run is None or run.done > index:
        directory = tmp_path_factory.mktemp(re.sub(r"\W", "_", path))
        run = _RUNS[path] = _FileRun(new_namespace(), directory)
    monkeypatch.chdir(run.directory)
    # Blocks before this one that did not run in this session (-k, reordering) run first.
    while run.done < index:
        earlier = blocks[run.done]
        run.done += 1
        if run.failed is None and not earlier.skip:
            try:
                run_block(earlier, run.namespace)
            except Exception:
                run.failed = earlier.id
    if run.failed is not None:
        pytest.skip(f"an earlier block of {path} failed: {run.failed}")
    run.done = index + 1
    try:
        run_block(block, run.namespace)
    except BaseException:
        run.failed = block.id
        raise


def test_the_readme_has_python_blocks():
    assert len(BLOCKS["README.md"]) >= 5


# The checker itself: it must catch a wrong number, not only bless right ones.


def run_snippet(source: str) -> dict[str, Any]:
    namespace = new_namespace()
    exec(compile_block(source, "snippet.md", 0), namespace)
    return namespace


@pytest.mark.parametrize(
    ("comment", "numbers", "decimals"),
    [
        ("# [[0.0986, 0.6590, 0.2424]]", (0.0986, 0.659, 0.2424), (4, 4, 4)),
        ("# 0.4170  (as torch.nn.functional.cross_entropy)", (0.417,), (4,)),
        ("# [[0.0986, -0.3410, 0.2424]] = (p - y) / N", (0.0986, -0.341, 0.2424), (4, 4, 4)),
        ("# -2.5e-3", (-0.0025,), (4,)),
        ("# (3, 28)", (3.0, 28.0), (0, 0)),
        ("# array([1., 2.5], dtype=float32)", (1.0, 2.5), (0, 1)),
    ],
)
def test_parse_claim_reads_the_leading_numbers(comment, numbers, decimals):
    claim = parse_claim(comment)
    assert claim is not None
    assert claim.numbers == pytest.approx(numbers) and claim.decimals == decimals


@pytest.mark.parametrize(
    "comment", ["# (N, C)", "# class indices (N,)", "# one fused pass", "# - a note", ""]
)
def test_prose_is_not_a_claim(comment):
    assert parse_claim(comment) is None


def test_right_numbers_pass_and_prose_is_ignored():
    namespace = run_snippet(
        "import numpy as np\n"
        "x = np.array([[0.09857, -0.34104]])\n"
        "x  # [[0.0986, -0.3410]] = (p - y) / N\n"
        "x.sum()  # the sum, not a claim\n"
        "1.3e-8  # ~1e-8\n"
        "x.size == 2  # True\n"
    )
    assert namespace["x"].shape == (1, 2)


@pytest.mark.parametrize(
    "snippet",
    [
        "x = 0.4171\nx  # 0.4170",
        "x = [0.1, 0.2]\nx  # [0.1, 0.2, 0.3]",
        "x = 0.41706\nx  # 0.4170  (rounds to 0.4171)",
        "1e-6  # ~1e-8",
        "2 > 1  # False",
    ],
)
def test_a_wrong_claim_fails(snippet):
    with pytest.raises(AssertionError, match=r"snippet\.md:\d+: the comment claims"):
        run_snippet(snippet)


def test_printed_output_is_checked():
    run_snippet("print('val acc 0.91')  # -> acc 0.91\n")
    with pytest.raises(AssertionError, match=r"snippet\.md:1: .*output containing 'acc 0.95'"):
        run_snippet("print('val acc 0.91')  # -> acc 0.95\n")


def test_blocks_are_found_with_their_lines_and_skip_reasons():
    text = (
        "# Title\n"
        "```python\n"
        "a = 1\n"
        "```\n"
        "```bash\n"
        "echo not python\n"
        "```\n"
        "<!-- docs-test: skip (downloads a dataset) -->\n"
        "```python\n"
        "b = a\n"
        "```\n"
        "- a list item:\n"
        "  ```python\n"
        "  if a:\n"
        "      c = 2\n"
        "  ```\n"
    )
    first, second, third = python_blocks(text, "x.md")
    assert (first.line, first.skip, first.source) == (2, None, "a = 1\n")
    assert (second.line, second.skip) == (9, "downloads a dataset")
    assert third.source == "if a:\n    c = 2\n"


def test_errors_point_at_the_documented_line():
    code = compile_block("def f():\n    raise ValueError\n\nf()\n", "x.md", 10)
    with pytest.raises(ValueError) as error:
        exec(code, new_namespace())
    assert [frame.lineno for frame in traceback.extract_tb(error.tb)[-2:]] == [14, 12]


def test_a_malformed_skip_marker_is_an_error():
    with pytest.raises(ValueError, match=r"x\.md:1: .*docs-test: skip \(reason\)"):
        python_blocks("<!-- docs-test: skip -->\n```python\na = 1\n```\n", "x.md")
