"""Code habits checked on the source, not hoped for: parameters past the fourth are keyword-only, and the
public classes of the engine have docstrings.

Every public function or method in ``froq_ray/`` (its name and the names of the classes around it do not start
with ``_``) takes at most 4 positional parameters (``self``/``cls`` not counted); the rest sit after a ``*`` so a
call names them (``evaluation/edc.py`` style). Functions nested in other functions are private to them and not
checked. A signature imposed from outside (a Ray or torch callback) would go in ``ALLOWED``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import froq_ray

PACKAGE = Path(froq_ray.__file__).parent
MAX_POSITIONAL = 4

ALLOWED: frozenset[str] = frozenset()
"""``"<path relative to froq_ray/>::<qualified name>"`` of public functions whose positional signature is imposed
from outside. Empty today: no public callback in the package takes more than 4 positional parameters."""


def too_many_positional(source: str, filename: str = "<string>") -> list[tuple[int, str, int]]:
    """``(line, qualified name, positional count)`` of the public functions in ``source`` taking more than
    ``MAX_POSITIONAL`` positional parameters (``self``/``cls`` of a method not counted)."""
    found: list[tuple[int, str, int]] = []

    def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                if not child.name.startswith("_"):
                    visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if child.name.startswith("_"):
                    continue
                positional = child.args.posonlyargs + child.args.args
                count = len(positional)
                if in_class and positional and positional[0].arg in ("self", "cls"):
                    count -= 1
                if count > MAX_POSITIONAL:
                    found.append((child.lineno, prefix + child.name, count))
            elif not isinstance(child, ast.expr):
                visit(child, prefix, in_class)  # if/try blocks at module or class level

    visit(ast.parse(source, filename=filename), "", False)
    return found


def test_public_functions_take_at_most_four_positional_parameters():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, name, count in too_many_positional(path.read_text(), str(path)):
            if f"{rel}::{name}" not in ALLOWED:
                offenders.append(f"froq_ray/{rel}:{line} {name} ({count} positional)")
    assert offenders == [], "make the parameters past the 4th keyword-only (add `*`):\n" + "\n".join(
        offenders
    )


def test_every_allowed_exception_still_exists():
    """An allow-list entry whose function was renamed or fixed is removed, so the list never hides a new one."""
    present = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        present |= {f"{rel}::{name}" for _, name, _ in too_many_positional(path.read_text(), str(path))}
    assert ALLOWED - present == set()


SAMPLE = """
def four(a, b, c, d): ...
def five(a, b, c, d, e): ...
def five_keyword(a, b, c, d, *, e, f): ...
def five_posonly(a, b, /, c, d, e): ...
def with_varargs(a, b, c, d, *rest, e): ...
def _private(a, b, c, d, e, f): ...
async def five_async(a, b, c, d, e=1): ...

class Public:
    def method(self, a, b, c, d): ...
    def wide(self, a, b, c, d, e): ...
    @classmethod
    def build(cls, a, b, c, d, e, f): ...
    @staticmethod
    def helper(a, b, c, d, e): ...
    def __init__(self, a, b, c, d, e, f): ...

    class Inner:
        def deep(self, a, b, c, d, e): ...

class _Hidden:
    def wide(self, a, b, c, d, e): ...

def outer(a):
    def inner(a, b, c, d, e): ...
    return inner

if True:
    def conditional(a, b, c, d, e): ...
"""


def test_the_rule_on_a_small_source():
    assert too_many_positional(SAMPLE) == [
        (3, "five", 5),
        (5, "five_posonly", 5),
        (8, "five_async", 5),
        (12, "Public.wide", 5),
        (14, "Public.build", 6),
        (16, "Public.helper", 5),
        (20, "Public.Inner.deep", 5),
        (30, "conditional", 5),
    ]


def public_classes_without_docstring(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """``(line, name)`` of the module-level public classes in ``source`` that have no docstring."""
    tree = ast.parse(source, filename=filename)
    return [
        (node.lineno, node.name)
        for node in tree.body
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and not ast.get_docstring(node)
    ]


def test_the_public_types_of_the_engine_have_class_docstrings():
    missing = [
        f"{path.relative_to(PACKAGE)}:{line} {name}"
        for path in sorted((PACKAGE / "engine").glob("*.py"))
        for line, name in public_classes_without_docstring(path.read_text(), str(path))
    ]
    assert missing == [], f"public engine classes without a docstring: {missing}"
    assert public_classes_without_docstring(
        'class A:\n    """doc"""\n\nclass B:\n    x = 1\n\nclass _C: pass\n'
    ) == [(4, "B")]
