"""Finding graded functions that call, or copy, coursekit's own reference implementation, without running them.

The lessons use coursekit freely; only the graded functions must be the student's own code. For
each graded function this reads the notebook's source (``ast``, never executed): the names it
uses, followed through the imports of the notebook (``from coursekit.methods import simclr as s``)
and through the other functions of the notebook it calls, are resolved in the grader's own
coursekit; one that *is* the exercise's reference function is reported. A name bound directly
to the reference (``from coursekit.methods.simclr import nt_xent``) is reported too.

A graded function that is the reference's source with its names changed and its formatting,
comments, docstrings or annotations edited is reported as a copy (``copies_reference``; the rule
is in ``is_copy_of``).

What reading the source cannot see (code built from strings, ``getattr`` with computed names)
stays outside this check.
"""
from __future__ import annotations

import ast
import copy
import functools
import importlib
import importlib.util
import inspect
import textwrap


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


def _imports(nodes, package: str | None = None) -> dict[str, str]:
    """Names bound by the import statements among ``nodes`` -> the dotted path they stand for;
    relative imports count only with ``package``, the package they are relative to."""
    bound = {}
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level and package:
            module = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{module}.{alias.name}"
            continue
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


def _binding(top_level: list[ast.stmt], function_name: str) -> ast.stmt | None:
    """The last top-level statement that binds ``function_name``, or None."""
    binding = None
    for node in top_level:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function_name:
            binding = node
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == function_name for t in node.targets):
            binding = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and function_name in _imports([node]):
            binding = node
    return binding


def reference_use(trees: list[ast.Module], function_name: str, reference) -> str:
    """The dotted name by which ``function_name`` (the last top-level definition) uses ``reference``,
    or "" when it does not."""
    top_level = [node for tree in trees for node in tree.body]
    imports = _imports(top_level)
    functions = {node.name: node for node in top_level if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    binding = _binding(top_level, function_name)
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


# ---------------------------------------------------------------------------------------------
# Copies of the reference's source, names and formatting aside
# ---------------------------------------------------------------------------------------------


def copies_reference(trees: list[ast.Module], function_name: str, reference) -> bool:
    """Whether ``function_name`` (the last top-level definition) is a copy of ``reference``'s source,
    names and formatting aside (``is_copy_of``), the notebook's imports resolving its free names."""
    top_level = [node for tree in trees for node in tree.body]
    binding = _binding(top_level, function_name)
    return isinstance(binding, ast.FunctionDef) and is_copy_of(binding, reference, _imports(top_level))


def is_copy_of(function: ast.FunctionDef, reference, imports: dict[str, str] | None = None) -> bool:
    """Whether ``function`` is ``reference``'s source up to names and formatting.

    Both definitions are normalized, then compared with ``ast.dump`` (no field names, no positions):

    * local names (the function's own name, its arguments, every name it assigns, loops over,
      catches or defines inside, minus those declared ``global``/``nonlocal``) become placeholders
      numbered in order of first appearance (depth first, in the tree's field order);
    * free names (modules, globals, builtins) are kept, except that a name bound by an import, and
      the attributes read from it (``F.normalize``), become the dotted path it stands for
      (``torch.nn.functional.normalize``): through ``imports`` (the notebook's) for ``function``,
      through the reference module's own imports for the reference; imports inside the function
      are dropped, their names resolved the same way. A renamed helper function of the notebook
      is a different free name: only the graded function itself is compared;
    * attribute names (``.sum``), keyword names of calls and constants (default values included) are kept;
    * the decorators of the function itself, every annotation, and every statement that is only
      a string (docstrings) are dropped; comments and formatting are not in the tree.

    A reference whose source cannot be read (a builtin, code built at run time) has no copies.
    """
    normalized = _normalized_reference(reference)
    return normalized is not None and normalized == _normalize(function, imports or {})


@functools.lru_cache(maxsize=None)
def _normalized_reference(reference) -> str | None:
    try:
        function = inspect.unwrap(reference)
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        module = inspect.getmodule(function)
        imports = _imports(ast.parse(inspect.getsource(module)).body, module.__package__) if module else {}
    except (OSError, TypeError, SyntaxError):
        return None
    definitions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return _normalize(definitions[0], imports) if definitions else None


def _normalize(function: ast.FunctionDef | ast.AsyncFunctionDef, imports: dict[str, str]) -> str:
    function = copy.deepcopy(function)  # the caller's tree is left as it is
    function.decorator_list = []
    local = _local_names(function)
    return ast.dump(_Normalizer(local, {k: v for k, v in imports.items() if k not in local}).visit(function),
                    annotate_fields=False, include_attributes=False)


def _local_names(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    names, declared = {function.name}, set()
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            declared.update(node.names)
    return names - declared


class _Normalizer(ast.NodeTransformer):
    """Renames the local names to placeholders, resolves imported free names, drops annotations and
    string-only statements; an import inside the function is dropped, its names joining ``imports``."""

    def __init__(self, local: set[str], imports: dict[str, str]):
        self.local, self.imports, self.placeholders = local, dict(imports), {}

    def _placeholder(self, name: str) -> str:
        return self.placeholders.setdefault(name, f"_{len(self.placeholders)}")

    def visit_FunctionDef(self, node):
        node.name, node.returns = self._placeholder(node.name), None
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        node.name = self._placeholder(node.name)
        return self.generic_visit(node)

    def visit_ExceptHandler(self, node):
        if node.name:
            node.name = self._placeholder(node.name)
        return self.generic_visit(node)

    def visit_arg(self, node):
        node.arg, node.annotation, node.type_comment = self._placeholder(node.arg), None, None
        return node

    def visit_Name(self, node):
        if node.id in self.imports:
            node.id = self.imports[node.id]
        elif node.id in self.local:
            node.id = self._placeholder(node.id)
        return node

    def visit_Attribute(self, node):
        path = _dotted(node)
        head = path.partition(".")[0] if path else None
        if head in self.imports:
            return ast.Name(id=self.imports[head] + path[len(head):], ctx=node.ctx)
        return self.generic_visit(node)

    def visit_Import(self, node):
        self.imports.update(_imports([node]))
        return None

    visit_ImportFrom = visit_Import

    def visit_AnnAssign(self, node):
        if node.value is None:
            return None
        return self.generic_visit(ast.Assign(targets=[node.target], value=node.value))

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return self.generic_visit(node)

    def visit_Constant(self, node):
        node.kind = None  # the u"" prefix
        return node
