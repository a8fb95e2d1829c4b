"""Integer expressions over ``+ - *`` and parentheses, shared by the arith and countdown tasks.

A tree is a leaf (an int) or a node ``(op, left, right)``. ``render`` writes a tree with the fewest
parentheses that ``parse`` reads back to the same tree (usual precedence, left-associative), so a
prompt fixes the order of its scratchpad; ``steps`` is that scratchpad, one ``x<op>y=z`` per
operation in evaluation order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

__all__ = ["APPLY", "MAX_NESTING", "PRECEDENCE", "Tree", "depth", "leaves", "nonnegative", "parse", "random_tree", "render",
           "steps", "value"]

PRECEDENCE = {"+": 1, "-": 1, "*": 2}
APPLY: dict[str, Callable[[int, int], int]] = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
}

Tree = int | tuple  # (op, Tree, Tree)


def random_tree(rng: random.Random, numbers: Sequence[int]) -> Tree:
    """A uniformly random split of ``numbers`` (kept in order) with uniformly random operators."""
    if len(numbers) == 1:
        return numbers[0]
    k = rng.randint(1, len(numbers) - 1)
    op = rng.choice("+-*")
    return (op, random_tree(rng, numbers[:k]), random_tree(rng, numbers[k:]))


def render(tree: Tree) -> str:
    """The expression with the fewest parentheses that parses back (left-associative, ``*``
    before ``+``/``-``) to exactly this tree, so the prompt fixes the scratchpad's order."""
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    ls, rs = render(left), render(right)
    if not isinstance(left, int) and PRECEDENCE[left[0]] < PRECEDENCE[op]:
        ls = f"({ls})"
    if not isinstance(right, int) and PRECEDENCE[right[0]] <= PRECEDENCE[op]:
        rs = f"({rs})"
    return ls + op + rs


def steps(tree: Tree) -> tuple[int, list[str]]:
    """The value and the scratchpad ``x op y=z`` of every operation, in evaluation order
    (left operand first, then right, then the operation: a post-order walk)."""
    if isinstance(tree, int):
        return tree, []
    op, left, right = tree
    x, left_steps = steps(left)
    y, right_steps = steps(right)
    z = APPLY[op](x, y)
    return z, left_steps + right_steps + [f"{x}{op}{y}={z}"]


def depth(tree: Tree) -> int:
    """The number of operations on the longest path from the root to a leaf."""
    return 0 if isinstance(tree, int) else 1 + max(depth(tree[1]), depth(tree[2]))


_TOKEN = re.compile(r"[0-9]+|[-+*()]")
MAX_NESTING = 32  # a model can write "((((...": bound the parser's recursion


def parse(text: str) -> Tree | None:
    """The tree of an expression over non-negative integers with ``+ - *`` and parentheses
    (usual precedence, left-associative; no unary minus, no leading zeros), or None when
    ``text`` is not such an expression. The inverse of ``render``."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            return None
        tokens.append(m.group())
        pos = m.end()
    if any(t[0] == "0" and len(t) > 1 for t in tokens):
        return None
    i = 0

    def expr(depth: int) -> Tree | None:
        nonlocal i
        tree = term(depth)
        while tree is not None and i < len(tokens) and tokens[i] in "+-":
            op = tokens[i]
            i += 1
            right = term(depth)
            tree = None if right is None else (op, tree, right)
        return tree

    def term(depth: int) -> Tree | None:
        nonlocal i
        tree = factor(depth)
        while tree is not None and i < len(tokens) and tokens[i] == "*":
            i += 1
            right = factor(depth)
            tree = None if right is None else ("*", tree, right)
        return tree

    def factor(depth: int) -> Tree | None:
        nonlocal i
        if i >= len(tokens) or depth > MAX_NESTING:
            return None
        t = tokens[i]
        i += 1
        if t.isdigit():
            return int(t)
        if t != "(":
            return None
        tree = expr(depth + 1)
        if tree is None or i >= len(tokens) or tokens[i] != ")":
            return None
        i += 1
        return tree

    tree = expr(0)
    return tree if i == len(tokens) else None


def value(tree: Tree) -> int:
    """The integer the expression evaluates to."""
    return tree if isinstance(tree, int) else APPLY[tree[0]](value(tree[1]), value(tree[2]))


def leaves(tree: Tree) -> list[int]:
    """The numbers of the expression, left to right."""
    return [tree] if isinstance(tree, int) else leaves(tree[1]) + leaves(tree[2])


def nonnegative(tree: Tree) -> Tree:
    """Swap the sides of every subtraction whose left side is smaller (bottom up)."""
    if isinstance(tree, int):
        return tree
    op, left, right = tree[0], nonnegative(tree[1]), nonnegative(tree[2])
    if op == "-" and value(left) < value(right):
        left, right = right, left
    return (op, left, right)

