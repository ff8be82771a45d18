"""The grader's end of the connection to a student's kernel (see ``wire`` for the other end).

``StudentKernel`` listens on a Unix socket; the grader's last cell in the student's kernel runs
``wire.serve``, which connects back. For each exercise the kernel forks a child that answers the
calls of that exercise only; the grader wraps that connection in a ``RemoteFunction``, which the
checks call through ``checks.call`` like a local function. Everything read from the socket is
plain data: a malformed or missing answer is a wrong answer, a silent or closed connection ends
the exercise (``StudentGone``).
"""
from __future__ import annotations

import secrets
import socket
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .. import wire
from ..homework.checks import Called
from ..core import StudentGone

# Read once, when the grader starts: later changes on disk never reach the cell sent to students.
RUNNER_SOURCE = Path(wire.__file__).read_text(encoding="utf-8")
CONNECT_TIMEOUT = 120.0  # seconds for the kernel (or its per-exercise child) to connect back (it may import torch)


class StudentKernel:
    """A listening socket for one submission; ``runner_cell()`` is the code that connects back."""

    def __init__(self, folder: Path, abstract: bool = True):
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if abstract and sys.platform.startswith("linux"):  # an abstract address: no file a submission could replace
            self.address = "\0coursekit-grader-" + secrets.token_hex(16)
        else:  # a kernel in its own network namespace sees no abstract address: a file, in a read-only folder there
            self.address = str(folder / "grader.sock")
        self.listener.bind(self.address)
        self.listener.listen(4)
        self.control: socket.socket | None = None

    def runner_cell(self) -> str:
        """Source of the cell that serves the grader's calls from inside the student's kernel."""
        return "\n".join([
            "def _coursekit_serve_grader():",
            "    runner = {'__name__': 'coursekit_grading_runner'}",
            f"    exec(compile({RUNNER_SOURCE!r}, 'coursekit-grading-runner', 'exec'), runner)",
            f"    runner['serve']({self.address!r}, globals())",
            "_coursekit_serve_grader()",
        ])

    def _accept(self, timeout: float, alive) -> socket.socket | None:
        """The next connection, or None after ``timeout`` s or once ``alive()`` turns false."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.listener.settimeout(min(0.5, max(deadline - time.monotonic(), 0.01)))
            try:
                connection, _ = self.listener.accept()
                return connection
            except socket.timeout:
                if not alive():
                    return None
        return None

    def connect(self, alive, timeout: float = CONNECT_TIMEOUT) -> bool:
        """Wait for the runner's control connection; False when it never came."""
        self.control = self._accept(timeout, alive)
        if self.control is None:
            return False
        try:
            header, _ = wire.receive_message(self.control, time.monotonic() + CONNECT_TIMEOUT)
        except (EOFError, TimeoutError, OSError, wire.WireError):
            return False
        return header.get("op") == "control"

    def open_exercise(self, function_name: str, time_limit: float, alive):
        """Ask the kernel for a process that answers calls of ``function_name``.

        Returns ``(connection, hello)`` where hello says whether the name was found and callable,
        or None when the kernel no longer answers."""
        try:
            wire.send_message(self.control, {"op": "exercise", "function": function_name, "time_limit": time_limit})
        except OSError:
            return None
        connection = self._accept(CONNECT_TIMEOUT, alive)
        if connection is None:
            return None
        try:
            hello, _ = wire.receive_message(connection, time.monotonic() + CONNECT_TIMEOUT)
        except (EOFError, TimeoutError, OSError, wire.WireError):
            connection.close()
            return None
        return connection, hello

    def close_exercise(self, connection: socket.socket, time_limit: float) -> bool:
        """End the exercise's process; True when the kernel is ready for the next exercise."""
        try:
            wire.send_message(connection, {"op": "end"})
        except OSError:
            pass
        connection.close()
        try:
            header, _ = wire.receive_message(self.control, time.monotonic() + time_limit + 15.0)
        except (EOFError, TimeoutError, OSError, wire.WireError):
            return False
        return header.get("op") == "exercise_done"

    def stop(self) -> None:
        if self.control is not None:
            try:
                wire.send_message(self.control, {"op": "stop"})
            except OSError:
                pass
            self.control.close()
        self.listener.close()


class RemoteFunction:
    """The student's function, called in the student's process; for ``checks.run_call``.

    ``deadline`` (time.monotonic) bounds all calls of one exercise together.
    """

    def __init__(self, connection: socket.socket, deadline: float):
        self.connection, self.deadline = connection, deadline
        self.gone: str | None = None  # "timeout" or "died" once the process stopped answering

    def remote_call(self, args: tuple, kwargs: dict, backward: dict | None, global_seed: int | None):
        if self.gone:
            raise StudentGone(self.gone)
        arrays: list = []
        request = {"op": "call", "args": wire.encode(list(args), arrays), "kwargs": wire.encode(dict(kwargs), arrays),
                   "backward": None if backward is None else {"upstream": wire.encode(backward["upstream"], arrays)},
                   "global_seed": global_seed}
        try:
            self.connection.settimeout(max(self.deadline - time.monotonic(), 0.01))  # a process that never reads
            wire.send_message(self.connection, request, arrays)
            reply, reply_arrays = wire.receive_message(self.connection, self.deadline)
        except TimeoutError:
            self.gone = "timeout"
        except (EOFError, OSError):
            self.gone = "died"
        except wire.WireError as error:
            return ("unreadable", str(error)), None
        if self.gone:
            raise StudentGone(self.gone)
        try:
            return _read_reply(reply, reply_arrays, args, backward)
        except (wire.WireError, AttributeError, KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
            detail = str(error) if isinstance(error, wire.WireError) else type(error).__name__  # never the answer's text
            return ("unreadable", f"malformed answer: {detail}"), None


def _read_reply(reply: dict, arrays: list, args: tuple, backward: dict | None):
    """The outcome and ``Called`` of one reply; mirrors the argument changes into ``args``."""
    outcome = reply.get("outcome")
    if outcome != "ok":
        if not (isinstance(outcome, list) and len(outcome) == 2 and
                outcome[0] in ("not_implemented", "exit", "raised", "unreadable")):
            raise wire.WireError("unknown outcome")
        return (outcome[0], _outcome_text(outcome[0], str(outcome[1]))), None
    modules = {i: a for i, a in enumerate(args) if isinstance(a, nn.Module)}
    value = wire.decode(reply["value"], arrays, modules)
    grads = [None if g is None else _tensor(wire.decode(g, arrays)) for g in reply["grads"]]
    leaves = [t for t in wire.tensors_in(list(args)) if t.requires_grad] if backward is not None else []
    if len(grads) != len(leaves):
        raise wire.WireError("wrong number of gradients")
    flags = {}
    after = reply["args"]
    if not isinstance(after, list) or len(after) != len(args):
        raise wire.WireError("wrong number of arguments")
    for index, (original, node) in enumerate(zip(args, after)):
        module_flags = _mirror(original, node, arrays)
        if module_flags is not None:
            flags[index] = module_flags
    return "ok", Called(value, grads, flags)


def _outcome_text(kind: str, text: str) -> str:
    """What feedback may say of a failed call: the exception's name if Python, numpy or torch define
    it, never its message (which the student's process chose, and could be a file's content)."""
    if kind == "unreadable":
        return "it holds a type or a size that cannot be sent back"
    if kind != "raised":
        return ""
    backward = text.startswith(wire.BACKWARD_FAILED)
    name = wire.safe_name(text.removeprefix(wire.BACKWARD_FAILED).split(":")[0])
    return f"{name} while backpropagating from your result" if backward else \
        f"{name} (run check() in your notebook to see its message)"


def _tensor(value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise wire.WireError("a gradient that is not a tensor")
    return value


def _mirror(original, node, arrays: list):
    """Apply to the grader's own argument the change the student's function made to its copy."""
    if isinstance(original, torch.Tensor):
        changed = _tensor(wire.decode(node, arrays)).detach()
        with torch.no_grad():
            if changed.shape == original.shape:
                original.copy_(changed)
            else:  # resized in place
                original.data = changed.to(original.dtype)
        return None
    if isinstance(original, nn.Module):
        if node.get("t") != "module":
            raise wire.WireError("a module came back as something else")
        return wire.load_state(original, node.get("state"), arrays)
    if isinstance(original, (list, tuple)):
        items = node.get("items")
        if not isinstance(items, list) or len(items) != len(original):
            raise wire.WireError("a list argument came back with another length")
        for item, item_node in zip(original, items):
            _mirror(item, item_node, arrays)
    elif isinstance(original, dict):
        items = node.get("items")
        if not isinstance(items, list) or len(items) != len(original):
            raise wire.WireError("a dict argument came back with another length")
        for value, pair in zip(original.values(), items):
            _mirror(value, pair[1], arrays)
    return None
