"""The grading core: results, feedback, time limits, rendering and the registries."""
import io
import json
import os
import re
import struct
import sys
import threading

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from coursekit.grading import EXERCISES, check, get_exercise, grade, not_implemented_text, render
from coursekit.grading import core
from coursekit.grading.homework import HOMEWORK, exercises_of

DESIGN_TABLE = [
    "bottleneck.stratified_subset", "simclr.nt_xent", "moco.momentum_update", "moco.infonce",
    "byol.regression_loss", "dino.dino_loss", "dino.update_center", "mae.patchify", "mae.random_masking",
    "mae.loss", "probe.knn_predict", "segmentation.mean_iou",
]


def stub(*args):
    raise NotImplementedError("your code here")


def endless(*args):
    while True:
        pass


def nt_xent_without_temperature(z1, z2, temperature):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T).fill_diagonal_(float("-inf"))
    n = len(z1)
    return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


def test_every_design_exercise_is_registered_with_points_and_hints():
    assert set(DESIGN_TABLE) <= set(EXERCISES)
    for exercise_id in DESIGN_TABLE:
        ex = get_exercise(exercise_id)
        assert ex.max_score >= 5 and ex.function_name.isidentifier()
        assert all(p.points > 0 and p.hint and p.description for p in ex.properties)


def test_homework_registry_names_only_registered_exercises():
    assert {"01_label_bottleneck", "02_simclr", "10_segmentation"} <= set(HOMEWORK)
    homework_exercises = [eid for ids in HOMEWORK.values() for eid in ids]
    assert set(DESIGN_TABLE) <= set(homework_exercises) <= set(EXERCISES)
    assert len(homework_exercises) == len(set(homework_exercises))
    with pytest.raises(ValueError, match="02_simclr"):
        exercises_of("99_unknown")


def test_unknown_exercise_id_lists_the_known_ids():
    with pytest.raises(ValueError, match="simclr.nt_xent"):
        grade("simclr.ntxent", stub)


def test_stub_scores_zero_with_the_stored_text(capsys):
    result = check("simclr.nt_xent", stub)
    assert (result.score, result.passed) == (0, False)
    assert capsys.readouterr().out.strip() == not_implemented_text("simclr.nt_xent")
    assert not_implemented_text("simclr.nt_xent") == (
        "simclr.nt_xent: 0/10 - not implemented yet: replace the raise NotImplementedError with your code")


def test_full_marks_text_is_one_line():
    result = core.GradeResult("simclr.nt_xent", 10, 10, True, [])
    assert render(result) == "simclr.nt_xent: 10/10 - all checks passed"


def test_partial_credit_names_each_failed_property():
    result = grade("simclr.nt_xent", nt_xent_without_temperature)
    assert 0 < result.score < result.max_score and not result.passed
    assert any("temperature not applied" in line for line in result.feedback)
    text = render(result)
    assert text.startswith("simclr.nt_xent: ") and "Hint:" in text


@pytest.mark.parametrize("bad_function, words", [
    (lambda z1, z2, t: "a string", "should be a torch.Tensor, got str"),
    (lambda z1, z2, t: torch.zeros(len(z1)), "per-sample losses"),
    (lambda z1, z2, t: torch.tensor(float("nan")), "NaN"),
    (lambda z1, z2, t: 1 / 0, "ZeroDivisionError"),
    (lambda z1, z2, t: sys.exit(3), "sys.exit()"),
    (42, "expected a function"),
])
def test_bad_functions_become_feedback(bad_function, words):
    result = grade("simclr.nt_xent", bad_function, time_limit=10)
    assert result.score == 0 and any(words in line for line in result.feedback)


def test_endless_loop_is_stopped_and_reported():
    result = grade("byol.regression_loss", endless, time_limit=1)
    assert result.score == 0
    assert "did not finish within 1 s" in result.feedback[0]
    assert "later checks were not run" in result.feedback[-1]


def test_os_exit_is_reported():
    result = grade("byol.regression_loss", lambda p, z: os._exit(0), time_limit=10)
    assert result.score == 0 and "os._exit()" in result.feedback[0]


def test_thread_fallback_stops_an_endless_loop(monkeypatch):
    monkeypatch.setattr(core, "_can_fork", lambda: False)
    stop = threading.Event()

    def loops_until_stopped(p, z):
        while not stop.is_set():
            pass

    try:
        assert "did not finish" in grade("byol.regression_loss", loops_until_stopped, time_limit=0.5).feedback[0]
    finally:
        stop.set()  # the thread cannot be killed: end it so it does not keep a core busy
    assert grade("simclr.nt_xent", stub).feedback == [core.NOT_IMPLEMENTED_FEEDBACK]


# ---------------------------------------------------------------------------------------------
# Grading through another process (what the batch grader does with a student's kernel)


def _serve_in_subprocess(kernel, namespace_source: str):
    """A plain Python process that defines functions with ``namespace_source`` and serves them."""
    import subprocess

    code = "\n".join([namespace_source, kernel.runner_cell()])
    return subprocess.Popen([sys.executable, "-c", code])


def _grade_remotely(source: str, exercise_ids, time_limit=20.0):
    import time

    from coursekit.grading.batch.remote import RemoteFunction, StudentKernel

    kernel = StudentKernel(None)
    process = _serve_in_subprocess(kernel, source)
    results = {}
    try:
        alive = lambda: process.poll() is None  # noqa: E731
        assert kernel.connect(alive, timeout=600)  # the process imports every reference first
        for exercise_id in exercise_ids:
            ex = get_exercise(exercise_id)
            connection, hello = kernel.open_exercise(ex.function_name, time_limit, alive)
            assert hello["found"] and hello["callable"], (exercise_id, hello)
            results[exercise_id] = core.grade_here(ex, RemoteFunction(connection, time.monotonic() + time_limit),
                                                   time_limit)
            kernel.close_exercise(connection, time_limit)
    finally:
        kernel.stop()
        process.wait(timeout=30)
    return results


def test_every_reference_gets_full_marks_through_another_process():
    lines = ["import importlib"]
    for ex in EXERCISES.values():
        module, name = ex.reference_path.split(":")
        lines.append(f"{ex.function_name} = getattr(importlib.import_module({module!r}), {name!r})")
    results = _grade_remotely("\n".join(lines), sorted(EXERCISES))
    for exercise_id, result in results.items():
        assert result.passed, (exercise_id, result.feedback)


def test_a_loop_in_the_other_process_ends_that_exercise_only():
    source = "def regression_loss(p, z):\n    while True:\n        pass\ndef nt_xent(z1, z2, t):\n    raise NotImplementedError"
    results = _grade_remotely(source, ["byol.regression_loss", "simclr.nt_xent"], time_limit=2.0)
    assert "did not finish within 2 s" in results["byol.regression_loss"].feedback[0]
    assert results["simclr.nt_xent"].feedback == [core.NOT_IMPLEMENTED_FEEDBACK]


def test_hints_point_at_the_idea_not_the_code():
    code = re.compile(r"torch\.|\bF\.|\.\w+\(|\w\(|\s=\s|\[\s*:|\*\*|//")
    for exercise_id, ex in EXERCISES.items():
        for prop in ex.properties:
            assert not code.search(prop.hint), (exercise_id, prop.hint)


def test_a_gradient_check_stays_silent_when_the_value_is_already_wrong():
    result = grade("simclr.nt_xent", nt_xent_without_temperature)
    assert not any("gradient" in line and "pt)" in line for line in result.feedback), result.feedback
    assert any("depend on the checks above" in line for line in result.feedback)


# ---------------------------------------------------------------------------------------------
# The wire: only plain data crosses it


def test_values_cross_the_wire_as_plain_data():
    from coursekit.grading import wire

    arrays = []
    value = {("a", "b"): 0.5, "t": torch.arange(3), "n": None, "x": [True, 2, "s"], "o": object()}
    node = wire.encode(value, arrays)
    back = wire.decode(node, [np.load(io.BytesIO(_npy(a)), allow_pickle=False) for a in arrays])
    assert back[("a", "b")] == 0.5 and torch.equal(back["t"], torch.arange(3)) and back["x"] == [True, 2, "s"]
    assert back["n"] is None and isinstance(back["o"], wire.Foreign) and back["o"].type_name == "object"


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_pickled_or_malformed_answers_are_refused():
    import socket as sockets

    from coursekit.grading import wire

    pickled = io.BytesIO()
    np.save(pickled, np.array([object()], dtype=object), allow_pickle=True)  # unpickling would run code
    for header, blob in [({"outcome": "ok"}, pickled.getvalue()), ({"outcome": "ok"}, b"not an array")]:
        sender, receiver = sockets.socketpair()
        head = json.dumps({**header, "blobs": [len(blob)]}).encode()
        sender.sendall(struct.pack("!Q", len(head)) + head + blob)
        with pytest.raises(wire.WireError):
            wire.receive_message(receiver)
        sender.close(), receiver.close()
    with pytest.raises(wire.WireError):
        wire.decode({"t": "tensor", "i": 0, "dtype": "torch.float32"}, [np.zeros(2, dtype=np.int64)])
    with pytest.raises(wire.WireError):
        wire.decode({"t": "param", "arg": 0, "name": "weight"}, [], {})


# ---------------------------------------------------------------------------------------------
# The wire's caps: a hostile answer costs the grader little, and is refused before it is built


def _raw_message(header_bytes: bytes, blobs: list[bytes], declared: int | None = None):
    """A message written by hand, as a hostile kernel would (not with wire.send_message)."""
    import socket as sockets

    sender, receiver = sockets.socketpair()
    size = len(header_bytes) if declared is None else declared
    sender.sendall(struct.pack("!Q", size) + header_bytes + b"".join(blobs))
    return sender, receiver


def test_a_header_over_the_cap_is_refused_before_it_is_read():
    import time

    from coursekit.grading import wire

    sender, receiver = _raw_message(b"", [], declared=192 * 2**20)  # announces 192 MiB, sends nothing
    with pytest.raises(wire.WireError, match="header over"):
        wire.receive_message(receiver, time.monotonic() + 5)  # reading would wait: a timeout, not this
    sender.close(), receiver.close()


def test_arrays_over_the_cap_or_lying_about_their_size_are_refused():
    import time
    import tracemalloc

    from coursekit.grading import wire

    too_many = json.dumps({"outcome": "ok", "blobs": [wire.MAX_MESSAGE_BYTES, 1]}).encode()
    sender, receiver = _raw_message(too_many, [])
    with pytest.raises(wire.WireError, match="over"):
        wire.receive_message(receiver, time.monotonic() + 5)
    sender.close(), receiver.close()

    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }"  # 8 TiB declared
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    blob = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 8
    sender, receiver = _raw_message(json.dumps({"outcome": "ok", "blobs": [len(blob)]}).encode(), [blob])
    tracemalloc.start()
    with pytest.raises(wire.WireError, match="malformed array"):
        wire.receive_message(receiver, time.monotonic() + 5)
    assert tracemalloc.get_traced_memory()[1] < 2**20
    tracemalloc.stop()
    sender.close(), receiver.close()


def test_an_array_referenced_twice_is_refused():
    from coursekit.grading import wire

    big = np.zeros(1000, dtype=np.float32)
    node = {"t": "list", "items": [{"t": "tensor", "i": 0, "dtype": "torch.float32"}] * 2}
    with pytest.raises(wire.WireError, match="already used"):
        wire.decode(node, [big])
    arrays = [big, big.copy()]  # across the decodes of one reply too (value, gradients, arguments)
    wire.decode({"t": "tensor", "i": 1, "dtype": "torch.float32"}, arrays)
    with pytest.raises(wire.WireError, match="already used"):
        wire.decode({"t": "ndarray", "i": 1}, arrays)


def test_a_huge_module_spec_is_refused_before_it_is_built():
    import tracemalloc

    from coursekit.grading import wire

    linear = {"kind": "Linear", "in": 16384, "out": 16384, "bias": True}
    spec = {"kind": "Sequential", "children": [[str(i), linear] for i in range(3)]}
    tracemalloc.start()
    with pytest.raises(wire.WireError, match="parameters"):
        wire.decode({"t": "module", "spec": spec, "state": {"tensors": {}}}, [np.zeros(4, dtype=np.float32)])
    assert tracemalloc.get_traced_memory()[1] < 2**20  # three such layers would take 3 GiB
    tracemalloc.stop()
    small = {"kind": "Linear", "in": 3, "out": 2, "bias": True}  # 8 parameters, but the answer holds 4 numbers
    with pytest.raises(wire.WireError, match="parameters"):
        wire.decode({"t": "module", "spec": small, "state": {"tensors": {}}}, [np.zeros(4, dtype=np.float32)])
    deep = {"kind": "Container", "children": []}
    for _ in range(300):
        deep = {"kind": "Container", "children": [["c", deep]]}
    with pytest.raises(wire.WireError, match="malformed|layers"):
        wire.decode({"t": "module", "spec": deep, "state": {"tensors": {}}}, [])
    ok = wire.decode({"t": "module", "spec": small, "state": {"tensors": {
        "weight": {"t": "tensor", "i": 0, "dtype": "torch.float32"},
        "bias": {"t": "tensor", "i": 1, "dtype": "torch.float32"}}}},
        [np.ones((2, 3), dtype=np.float32), np.zeros(2, dtype=np.float32)])
    assert isinstance(ok, torch.nn.Linear) and float(ok.weight.detach().sum()) == 6.0
