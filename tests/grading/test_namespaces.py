"""Each submission's kernel in its own namespaces (bubblewrap): what it cannot reach, and its end.

The probe below is what a hostile submission would try; it reports what it managed, and the test
asserts it managed none of it. Skipped where bubblewrap cannot make namespaces (then the grader warns).
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coursekit.grading.batch import sandbox
from coursekit.grading.batch.runner import PACKAGE_DIR, hidden_paths
from tests.conftest import processes_with

needs_namespaces = pytest.mark.skipif(not sandbox.namespaces_available(), reason="bubblewrap cannot make namespaces here")

PROBE = r'''
import json, os, socket, subprocess, sys, time
tried = {}
def attempt(name, action):
    try:
        action()
        tried[name] = "done"
    except Exception as error:
        tried[name] = type(error).__name__
package, secret, port, abstract, token = sys.argv[1:6]
attempt("write the package", lambda: open(os.path.join(package, "planted.py"), "w").write("x = 1"))
attempt("read the grader's output", lambda: open(secret).read() or (_ for _ in ()).throw(ValueError("empty")))
attempt("reach a host TCP port", lambda: socket.create_connection(("127.0.0.1", int(port)), timeout=2))
attempt("reach a host abstract socket", lambda: socket.socket(socket.AF_UNIX).connect("\0" + abstract))
attempt("write its own folder", lambda: open("mine.txt", "w").write("mine"))
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", token], start_new_session=True)
# a leader whose main thread exits (a zombie in ps) while a thread named by the token keeps running
ZOMBIE_LEADER = """import ctypes, sys, threading, time
def worker():
    ctypes.CDLL(None).prctl(15, sys.argv[1][:15].encode(), 0, 0, 0)  # PR_SET_NAME: the thread's comm
    time.sleep(60)
threading.Thread(target=worker).start()
time.sleep(0.5)
ctypes.CDLL(None).pthread_exit(None)
"""
subprocess.Popen([sys.executable, "-c", ZOMBIE_LEADER, token], start_new_session=True)
time.sleep(1)
print(json.dumps(tried))
'''


@needs_namespaces
def test_a_kernel_in_namespaces_reaches_only_its_own_folder_and_ends_with_everything_it_started(tmp_path):
    package = tmp_path / "package"
    package.mkdir()
    secret = tmp_path / "out" / "grades.csv"
    secret.parent.mkdir()
    secret.write_text("alice,25\n")
    listener = socket.create_server(("127.0.0.1", 0))
    abstract = f"coursekit-test-{os.getpid()}"
    host_socket = socket.socket(socket.AF_UNIX)
    host_socket.bind("\0" + abstract)
    host_socket.listen(1)
    token = f"coursekit-daemon-{os.getpid()}-{time.monotonic_ns()}"
    folders = sandbox.Folders(tmp_path / "private")
    argv = [sys.executable, "-c", PROBE, str(package), str(secret), str(listener.getsockname()[1]), abstract, token]
    (secret.parent / "inner").mkdir()  # hidden with its folder: named too, as the grader may name it
    hidden = [secret.parent, secret.parent / "inner", secret]
    finished = subprocess.run(sandbox.isolated_command(argv, folders, hidden=hidden), capture_output=True,
                              text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr[-2000:]
    tried = json.loads(finished.stdout.splitlines()[-1])
    assert tried["write its own folder"] == "done" and (folders.work / "mine.txt").read_text() == "mine"
    assert tried["write the package"] == "OSError" and not (package / "planted.py").exists()
    assert tried["read the grader's output"] != "done"  # the folder is an empty one there
    assert tried["reach a host TCP port"] != "done" and tried["reach a host abstract socket"] != "done"
    deadline = time.monotonic() + 5
    while processes_with(token, "cmdline") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(token, "cmdline") == []  # the detached sleeper ended with its namespace
    while _threads_named(token[:15]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _threads_named(token[:15]) == []  # and the thread of the zombie leader with it
    listener.close()
    host_socket.close()


def _threads_named(name: str) -> list[str]:
    found = []
    for comm in Path("/proc").glob("[0-9]*/task/[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                found.append(str(comm.parent))
        except OSError:
            continue
    return found


def test_hidden_paths_hide_folders_unless_they_hold_what_the_kernel_needs(tmp_path):
    out_folder, submissions = tmp_path / "grades", tmp_path / "class"
    out_folder.mkdir()
    submissions.mkdir()
    (submissions / "alice_02_simclr.ipynb").write_text("{}")
    next_to_package = PACKAGE_DIR.parent / "grades-in-the-repository.csv"  # its folder holds the package
    hidden = hidden_paths([out_folder / "grades.csv", None, next_to_package],
                          [submissions / "alice_02_simclr.ipynb"])
    assert out_folder in hidden and submissions in hidden
    assert PACKAGE_DIR.parent not in hidden and next_to_package not in hidden  # it does not exist: nothing to mask
    next_to_package.write_text("alice,25\n")
    try:
        assert next_to_package in hidden_paths([next_to_package], [])  # the file itself, not its folder
    finally:
        next_to_package.unlink()


def test_without_namespaces_the_grader_warns_that_it_does_not_isolate(tmp_path, monkeypatch, capsys):
    from coursekit.grading.batch import grade_batch

    monkeypatch.setattr(sandbox, "namespaces_available", lambda: False)
    out = tmp_path / "grades.csv"
    assert grade_batch([str(tmp_path / "nothing")], out) == 0
    assert "WARNING: grading WITHOUT isolation" in capsys.readouterr().out
