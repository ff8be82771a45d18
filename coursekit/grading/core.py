"""The grading core: the exercise registry, ``grade``, ``check`` and the text they show.

An exercise is a list of *properties*, each worth some points. A property is a small function
that receives the student function, calls it (only through ``checks.call`` / ``call_backward``)
on inputs it builds itself, and raises ``CheckFailed("plain words")`` when the behaviour is
wrong, or ``Unscored`` when it cannot mean anything because an earlier property failed.

``grade`` (``check`` in notebooks) runs the properties of one exercise in a forked child process on
Linux (so a function that loops forever, calls ``os._exit`` or crashes the interpreter cannot take
the notebook down), or in a thread elsewhere. ``grade_here`` runs them in this process on a
``remote.RemoteFunction``: the batch grader's way, where only the student's function runs in the
student's kernel. Both turn every outcome into points and feedback and never raise because of
the student function.
"""
from __future__ import annotations

import multiprocessing
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

DEFAULT_TIME_LIMIT = 20.0  # seconds for all properties of one exercise
NOT_IMPLEMENTED_FEEDBACK = "not implemented yet: replace the raise NotImplementedError with your code"
UNSCORED = object()  # outcome of a property that an earlier failure makes meaningless


class CheckFailed(Exception):
    """Raised by a property when the student's function behaves wrongly; the message is the feedback."""


class Unscored(CheckFailed):
    """Raised by a property that cannot mean anything because an earlier one failed (a gradient
    check when the value is already wrong): no points, and no feedback line of its own."""


class NotImplementedYet(Exception):
    """Raised when the student's function still raises ``NotImplementedError``."""


class StudentGone(Exception):
    """The process running the student's function stopped answering: ``kind`` is "timeout" or "died"."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class GradeResult:
    """The outcome of grading one exercise.

    ``feedback`` holds one line per failed property (empty at full marks), or the single
    "not implemented yet" line for an untouched stub.
    """

    exercise_id: str
    score: int
    max_score: int
    passed: bool
    feedback: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Property:
    """One checked behaviour: ``test(fn)`` raises ``CheckFailed`` when ``fn`` gets it wrong."""

    description: str
    points: int
    test: Callable[[Callable], None]
    hint: str = ""


@dataclass
class Exercise:
    """A graded exercise: its stable id, the name of the function the homework defines, the
    reference (``"module:function"`` in the package, imported only when needed) and its properties.
    """

    exercise_id: str
    function_name: str
    reference_path: str
    properties: list[Property] = field(default_factory=list)

    @property
    def max_score(self) -> int:
        return sum(p.points for p in self.properties)

    def checks(self, description: str, points: int = 1, hint: str = "") -> Callable:
        """Decorator that adds a property: ``@ex.checks("is symmetric in the two views", points=1, hint=...)``."""

        def add(test: Callable[[Callable], None]) -> Callable[[Callable], None]:
            self.properties.append(Property(description, points, test, hint))
            return test

        return add

    def reference(self) -> Callable:
        """The package's own implementation (the lessons use the same code)."""
        import importlib

        module_name, function_name = self.reference_path.split(":")
        return getattr(importlib.import_module(module_name), function_name)


EXERCISES: dict[str, Exercise] = {}


def exercise(exercise_id: str, function_name: str, reference: str) -> Exercise:
    """Create and register an exercise; add properties with ``@ex.checks(...)``."""
    if exercise_id in EXERCISES:
        raise ValueError(f"exercise {exercise_id!r} is registered twice")
    EXERCISES[exercise_id] = Exercise(exercise_id, function_name, reference)
    return EXERCISES[exercise_id]


def get_exercise(exercise_id: str) -> Exercise:
    """The registered exercise, or a ``ValueError`` that lists the known ids."""
    if exercise_id not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise ValueError(f"unknown exercise id {exercise_id!r}; known ids: {known}")
    return EXERCISES[exercise_id]


# ---------------------------------------------------------------------------------------------
# Running the properties. The runner reports through ``send`` one message per property:
# ("ok", index), ("failed", index, message), ("unscored", index), ("not_implemented",), and finally
# ("done",) or, when the student's process stopped answering, ("timeout",) or ("died",).
# ---------------------------------------------------------------------------------------------


def _run_properties(ex: Exercise, fn: Callable, send: Callable[[tuple], None]) -> None:
    for index, prop in enumerate(ex.properties):
        try:
            prop.test(fn)
        except NotImplementedYet:
            send(("not_implemented",))
            return
        except StudentGone as gone:
            send((gone.kind,))
            return
        except Unscored:
            send(("unscored", index))
        except CheckFailed as failure:
            send(("failed", index, str(failure)))
        except BaseException as error:  # noqa: BLE001 - anything the student's result provokes
            send(("failed", index, f"your result could not be used: {_describe(error)}"))
        else:
            send(("ok", index))
    send(("done",))


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _child_main(ex: Exercise, fn: Callable, connection) -> None:
    """Entry point of the forked child: one thread, properties run, messages pickled to the parent."""
    import torch

    torch.set_num_threads(1)
    try:
        _run_properties(ex, fn, connection.send)
    finally:
        connection.close()


def _messages_from_fork(ex: Exercise, fn: Callable, time_limit: float):
    """Yield the runner's messages from a forked child; ("timeout",) or ("died",) when it stops early."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(ex, fn, sender), daemon=True)
    process.start()
    sender.close()
    deadline = time.monotonic() + time_limit
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not receiver.poll(remaining):
                yield ("timeout",)
                return
            try:
                message = receiver.recv()
            except (EOFError, OSError):
                yield ("died",)
                return
            yield message
            if message[0] in ("done", "not_implemented"):
                return
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(timeout=5)


def _messages_from_thread(ex: Exercise, fn: Callable, time_limit: float):
    """Same protocol with a daemon thread (no fork available): an endless loop keeps running in the
    background, but grading returns at the time limit."""
    messages: queue.Queue = queue.Queue()
    threading.Thread(target=_run_properties, args=(ex, fn, messages.put), daemon=True).start()
    deadline = time.monotonic() + time_limit
    while True:
        try:
            message = messages.get(timeout=max(deadline - time.monotonic(), 0.001))
        except queue.Empty:
            yield ("timeout",)
            return
        yield message
        if message[0] in ("done", "not_implemented"):
            return


def _can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def grade(exercise_id: str, fn: Callable, time_limit: float = DEFAULT_TIME_LIMIT) -> GradeResult:
    """Grade ``fn`` on every property of the exercise; never raises because of ``fn``.

    Raises ``ValueError`` only for an unknown ``exercise_id``.
    """
    ex = get_exercise(exercise_id)
    if not callable(fn):
        return GradeResult(exercise_id, 0, ex.max_score, False,
                           [f"expected a function, got {type(fn).__name__}: pass the function itself, without calling it"])
    messages = _messages_from_fork if _can_fork() else _messages_from_thread
    return result_from_messages(ex, messages(ex, fn, time_limit), time_limit)


def grade_here(ex: Exercise, fn: Callable, time_limit: float) -> GradeResult:
    """Run the properties in this process: for a ``RemoteFunction`` (the batch grader), whose
    calls run in the student's process and stop at its own time limit."""
    messages: list[tuple] = []
    _run_properties(ex, fn, messages.append)
    return result_from_messages(ex, messages, time_limit)


def result_from_messages(ex: Exercise, messages, time_limit: float) -> GradeResult:
    """The result from the runner's messages (see ``_run_properties``)."""
    exercise_id = ex.exercise_id
    outcomes: dict[int, str | None] = {}  # property index -> None (passed) or the failure message
    stopped = None  # why grading stopped early, if it did
    for message in messages:
        kind = message[0]
        if kind == "not_implemented":
            return GradeResult(exercise_id, 0, ex.max_score, False, [NOT_IMPLEMENTED_FEEDBACK])
        if kind == "ok":
            outcomes[message[1]] = None
        elif kind == "failed":
            outcomes[message[1]] = message[2]
        elif kind == "unscored":
            outcomes[message[1]] = UNSCORED
        elif kind in ("timeout", "died"):
            stopped = _stop_reason(kind, time_limit)
    return _result_from_outcomes(ex, outcomes, stopped)


def _stop_reason(kind: str, time_limit: float) -> str:
    if kind == "timeout":
        return f"did not finish within {time_limit:g} s (an endless loop?)"
    return "the process running your function ended (did it call sys.exit() or os._exit()?)"


def _result_from_outcomes(ex: Exercise, outcomes: dict[int, str | None], stopped: str | None) -> GradeResult:
    """Points for the passed properties; one feedback line per failed property, one line for the
    checks not scored because an earlier one failed, and when grading stopped early, one line for
    the property that was running and one for those never run."""
    score, feedback, unscored = 0, [], 0
    for index, prop in enumerate(ex.properties):
        if index not in outcomes:
            continue
        failure = outcomes[index]
        if failure is None:
            score += prop.points
        elif failure is UNSCORED:
            unscored += prop.points
        else:
            hint = f" Hint: {prop.hint}" if prop.hint else ""
            feedback.append(f"{prop.description} ({prop.points} pt): {failure.rstrip('.')}.{hint}")
    if unscored:
        feedback.append(f"{unscored} more point{'s' if unscored != 1 else ''} depend on the checks above "
                        "(e.g. gradients, once the value is right)")
    running = len(outcomes)
    if stopped is not None and running < len(ex.properties):
        feedback.append(f"{ex.properties[running].description}: {stopped}")
        not_run = len(ex.properties) - running - 1
        if not_run:
            feedback.append(f"{not_run} later check{'s were' if not_run != 1 else ' was'} not run")
    return GradeResult(ex.exercise_id, score, ex.max_score, score == ex.max_score, feedback)


# ---------------------------------------------------------------------------------------------
# Text shown in notebooks (deterministic: nbval compares it).
# ---------------------------------------------------------------------------------------------


def render(result: GradeResult) -> str:
    """Plain-text summary: a first line with the score, then one line per failed property."""
    head = f"{result.exercise_id}: {result.score}/{result.max_score} - "
    if result.passed:
        return head + "all checks passed"
    if result.feedback == [NOT_IMPLEMENTED_FEEDBACK]:
        return head + NOT_IMPLEMENTED_FEEDBACK
    lines = [head + "some checks failed"]
    lines += [f"  x {line}" for line in result.feedback]
    return "\n".join(lines)


def not_implemented_text(exercise_id: str) -> str:
    """The exact text ``check`` prints for an untouched stub, without running anything."""
    ex = get_exercise(exercise_id)
    return render(GradeResult(exercise_id, 0, ex.max_score, False, [NOT_IMPLEMENTED_FEEDBACK]))


def check(exercise_id: str, fn: Callable, time_limit: float = DEFAULT_TIME_LIMIT) -> GradeResult:
    """Grade ``fn`` and print the summary (used in the graded cells of homework notebooks)."""
    result = grade(exercise_id, fn, time_limit=time_limit)
    print(render(result))
    return result
