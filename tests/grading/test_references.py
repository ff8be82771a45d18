"""The reference-copy check (``coursekit.grading.batch.references.is_copy_of``): a graded function that is
the reference's source up to names and formatting is a copy; an independently written one, or a
copy with one operation changed, is not. The cases are written out here by hand, not derived
from the normalization under test."""
import ast
import inspect
import json
from pathlib import Path

import pytest
import torch

from coursekit.grading import EXERCISES, get_exercise
from coursekit.grading.batch import runner as batch
from coursekit.grading.homework import HOMEWORK
from coursekit.grading.batch.references import copies_reference, parse_cells

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "solutions"
FIXTURES = ROOT / "tests" / "fixtures" / "submissions"
HOMEWORK_OF = {eid: homework for homework, ids in HOMEWORK.items() for eid in ids}

# coursekit.methods.moco.infonce, pasted as it is (with the imports its module uses)
VERBATIM = '''import torch
import torch.nn.functional as F
from torch import Tensor


def infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE with one positive key per query and a queue of negatives."""
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [N, D] with the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be [K, D] with D = {q.shape[1]}, got {tuple(queue.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    k, queue = k.detach(), queue.detach()
    positive = (q * k).sum(dim=1, keepdim=True)  # [N, 1]
    negatives = q @ queue.T  # [N, K]
    logits = torch.cat([positive, negatives], dim=1) / temperature  # [N, 1 + K]
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is class 0
    return F.cross_entropy(logits, labels)
'''

# the same code: every local renamed (in the messages' f-strings too), other import aliases, no
# annotations, a new docstring and comments, other spacing and line breaks (the messages' text is
# kept: string constants are compared as they are)
RENAMED = '''import torch as th
from torch.nn import functional as nnf

def infonce( query , key , bank , tau ):
    """My own InfoNCE, written from the lecture notes."""
    # check the shapes first
    if query.ndim != 2 or query.shape != key.shape:
        raise ValueError(f"q and k must both be [N, D] with the same shape, got {tuple(query.shape)} and "
                         f"{tuple(key.shape)}")
    if bank.ndim != 2 or bank.shape[1] != query.shape[1]:
        raise ValueError(f"queue must be [K, D] with D = {query.shape[1]}, got {tuple(bank.shape)}")
    if tau <= 0:
        raise ValueError(f"temperature must be positive, got {tau}")
    key , bank = key.detach() , bank.detach()
    pos = ( query * key ).sum( dim = 1 , keepdim = True )
    neg = query @ bank.T

    scores = th.cat( [pos, neg], dim=1 ) / tau
    target: th.Tensor = th.zeros(query.shape[0],
                                 dtype=th.long,
                                 device=query.device)
    return nnf.cross_entropy(scores, target)
'''

# a different correct implementation: other torch ops, no copied line
OWN = '''import torch

def infonce(q, k, queue, temperature):
    k = k.detach()
    candidates = torch.cat([k.unsqueeze(1), queue.detach().expand(len(q), -1, -1)], dim=1)  # [N, 1 + K, D]
    logits = torch.einsum("nd,nkd->nk", q, candidates) / temperature
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()
'''

# the renamed copy with one operation changed (a mean where the reference sums)
ONE_CHANGE = RENAMED.replace(".sum( dim = 1", ".mean( dim = 1")

# coursekit.methods.dino.update_center, renamed, with and without its decorator
CENTER = '''import torch
{decorator}
def update_center(c, outputs, m):
    if outputs.ndim != 2 or c.shape != (1, outputs.shape[1]):
        raise ValueError(f"center must be [1, K] and teacher_out [M, K], got {{tuple(c.shape)}} and {{tuple(outputs.shape)}}")
    mean = outputs.mean(dim=0, keepdim=True)
    return m * c + (1 - m) * mean
'''


def _copies(source: str, exercise_id: str) -> bool:
    ex = get_exercise(exercise_id)
    return copies_reference(parse_cells([source]), ex.function_name, ex.reference())


def _code_cells(notebook: Path) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]
            if cell["cell_type"] == "code"]


@pytest.mark.parametrize("source", [VERBATIM, RENAMED], ids=["verbatim", "renamed-reformatted-docstring"])
def test_a_copy_of_the_reference_is_flagged(source):
    assert ast.parse(source)  # valid Python
    assert _copies(source, "moco.infonce")


@pytest.mark.parametrize("source", [OWN, ONE_CHANGE], ids=["own-implementation", "one-operation-changed"])
def test_other_code_is_not_flagged(source):
    assert source != RENAMED
    assert not _copies(source, "moco.infonce")


def test_the_own_implementation_is_correct():
    """OWN is a fair honest case: it computes what the reference computes."""
    namespace = {}
    exec(OWN, namespace)  # noqa: S102 - the test's own source
    q, k, queue = (torch.nn.functional.normalize(torch.randn(*shape), dim=1) for shape in ((4, 8), (4, 8), (16, 8)))
    torch.testing.assert_close(namespace["infonce"](q, k, queue, 0.2), get_exercise("moco.infonce").reference()(q, k, queue, 0.2))


@pytest.mark.parametrize("decorator", ["", "@torch.no_grad()"])
def test_a_decorated_reference_is_compared_without_its_decorator(decorator):
    assert _copies(CENTER.format(decorator=decorator), "dino.update_center")
    assert not _copies(CENTER.format(decorator=decorator).replace("(1 - m)", "(1 + m)"), "dino.update_center")


def test_the_batch_grader_gives_a_copy_zero_with_the_reason():
    trees = parse_cells([RENAMED])
    feedback = batch._reference_feedback(trees, get_exercise("moco.infonce"))
    assert "reference implementation with its names changed" in feedback and "coursekit.methods.moco.infonce" in feedback
    assert batch._reference_feedback(parse_cells([OWN]), get_exercise("moco.infonce")) == ""
    calls = batch._reference_feedback(parse_cells(["from coursekit.methods.moco import infonce"]),
                                      get_exercise("moco.infonce"))
    assert "calls coursekit's own reference implementation" in calls


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_the_shipped_solution_is_not_a_copy_and_a_pasted_reference_is(exercise_id):
    """Every registered exercise: the solution notebook's definition is the course's own code, not
    the package's; the reference's source pasted with its module's imports is seen as a copy."""
    ex = EXERCISES[exercise_id]
    cells = _code_cells(SOLUTIONS / f"{HOMEWORK_OF[exercise_id]}.ipynb")
    assert any(f"def {ex.function_name}(" in cell for cell in cells), f"no cell defines {ex.function_name}"
    assert not copies_reference(parse_cells(cells), ex.function_name, ex.reference())

    reference = inspect.unwrap(ex.reference())
    module = inspect.getmodule(reference)
    imports = []
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, ast.ImportFrom) and node.level:  # a notebook imports from the package by name
            node = ast.ImportFrom(module=f"{module.__package__.rsplit('.', node.level - 1)[0]}"
                                         f"{'.' + node.module if node.module else ''}", names=node.names, level=0)
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
            imports.append(ast.unparse(node))
    pasted = parse_cells(["\n".join(imports), inspect.getsource(reference)])
    assert copies_reference(pasted, ex.function_name, ex.reference())


def test_no_fixture_submission_is_a_copy_but_the_copied_one():
    copied = {("hostile_reference_copied_02_simclr.ipynb", "simclr.augmentation_pair_similarity")}
    for notebook in sorted(FIXTURES.glob("*_02_simclr.ipynb")):
        try:
            cells = _code_cells(notebook)
        except ValueError:
            continue  # the fixture that is not JSON
        trees = parse_cells(cells)
        for exercise_id in HOMEWORK["02_simclr"]:
            ex = get_exercise(exercise_id)
            expected = (notebook.name, exercise_id) in copied
            assert copies_reference(trees, ex.function_name, ex.reference()) == expected, (notebook.name, exercise_id)
