"""Finding graded functions that call coursekit's own reference implementation, without running them.

The lessons use coursekit freely; only the graded functions must be the student's own code. For
each graded function this reads the notebook's source (``ast``, never executed): the names it
uses, followed through the imports of the notebook (``from coursekit.methods import simclr as s``)
and through the other functions of the notebook it calls, are resolved in the grader's own
coursekit; one that *is* the exercise's reference function is reported. A name bound directly
to the reference (``from coursekit.methods.simclr import nt_xent``) is reported too.

What reading the source cannot see (code built from strings, ``getattr`` with computed names)
stays outside this check.
"""
from __future__ import annotations

import ast
import importlib


def parse_cells(sources: list[str]) -> list[ast.Module]:
    """The code cells as Python syntax trees (IPython magics turned into Python first); cells that
    do not parse are skipped, as the kernel skipped them."""
    from IPython.core.inputtransformer2 import TransformerManager

    transformer = TransformerManager()
    trees = []
    for source in sources:
        try:
            trees.append(ast.parse(transformer.transform_cell(source)))
        except (SyntaxError, ValueError):
            continue
    return trees


def _imports(nodes) -> dict[str, str]:
    """Names bound by the import statements among ``nodes`` -> the dotted path they stand for."""
    bound = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    bound[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bound


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _resolve(path: str):
    """The object a dotted coursekit path names in the grader's package, or None."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except Exception:  # noqa: BLE001 - not a module (or not importable): try a shorter prefix
            continue
        for attribute in parts[split:]:
            obj = getattr(obj, attribute, None)
        return obj
    return None


def reference_use(trees: list[ast.Module], function_name: str, reference) -> str:
    """The dotted name by which ``function_name`` (the last top-level definition) uses ``reference``,
    or "" when it does not."""
    top_level = [node for tree in trees for node in tree.body]
    imports = _imports(top_level)
    functions = {node.name: node for node in top_level if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    binding = None  # the last top-level statement that binds function_name
    for node in top_level:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function_name:
            binding = node
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == function_name for t in node.targets):
            binding = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and function_name in _imports([node]):
            binding = node
    if binding is None:
        return ""
    if isinstance(binding, (ast.Import, ast.ImportFrom)):
        path = _imports([binding])[function_name]
        return path if path.startswith("coursekit") and _resolve(path) is reference else ""

    seen, pending = set(), [binding]
    while pending:  # the function, and every notebook function it refers to
        node = pending.pop()
        local_imports = {**imports, **_imports(ast.walk(node))}
        for inner in ast.walk(node):
            path = _dotted(inner) if isinstance(inner, (ast.Name, ast.Attribute)) else None
            if path is None:
                continue
            head, _, rest = path.partition(".")
            if head in functions and head not in seen and not rest:
                seen.add(head)
                pending.append(functions[head])
            full = local_imports.get(head)
            if full and full.startswith("coursekit"):
                full = f"{full}.{rest}" if rest else full
                if _resolve(full) is reference:
                    return full
    return ""
