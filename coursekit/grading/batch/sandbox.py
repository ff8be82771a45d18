"""The sandbox each submission runs in (Linux): its own folders, resource limits, and an end.

* **Folders:** a private working folder (the notebook's cwd), HOME and TMPDIR, all deleted after
  grading, so a submission that cleans or fills ``$TMPDIR`` or ``~`` touches only its own.
* **Limits** (``Limits``, set with ``resource.setrlimit`` in the kernel before it starts, inherited
  by every process it starts): address space per process (``--memory-limit``, MiB), CPU seconds
  per process (``--cpu-limit``) and the number of processes and threads (``--process-limit``:
  Linux counts them per user, so the limit is what the instructor's account already runs plus
  this many).
* **An end:** the kernel starts its own session; the grader marks itself a *child subreaper*, so
  that processes a submission detaches (double fork, ``setsid``) are re-parented to the grader
  instead of init. After each submission every process that descends from the grader and did
  not exist before is killed.
* **Namespaces** (Linux, with bubblewrap's ``bwrap``): the kernel and everything it starts run in
  their own PID, mount, network, IPC, UTS and user namespaces (``isolated_command``). The whole
  filesystem is read-only there except the submission's private folder; the grader's output files
  and the other submissions' folders are hidden; there is no network (not even the grader's own
  sockets: the kernel reaches the grader only through a socket file in a read-only folder of its
  private root, and the Jupyter channels are socket files in that root too). When grading ends the
  PID namespace ends, and every process in it with it. Without ``bwrap`` (or on a kernel that
  refuses user namespaces) the grader says loudly that it grades without isolation.
* **The package:** ``fingerprint`` hashes the installed coursekit, its ``.pyc`` files included,
  before and after each submission. Kernels write no bytecode (``PYTHONDONTWRITEBYTECODE``), so
  a ``.pyc`` that appears or changes there is a submission's doing.

Outside this guarantee without namespaces: the network, and reading or writing any file the
instructor's account may access outside these folders. Grade in a container (or a throwaway
account) for that, or install bubblewrap.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Limits:
    """Resource limits of every process of a submission."""

    memory_mb: int = 6144  # address space of one process; a CUDA build of torch alone maps about 3.3 GiB
    cpu_seconds: int = 900  # CPU time of one process
    processes: int = 256  # processes and threads beyond those the user already runs


# Runs in the kernel's process before it becomes the kernel: new session, limits, then exec.
_LAUNCHER = """import os, resource, sys
memory, cpu, processes = (int(v) for v in sys.argv[1:4])
if os.getsid(0) != os.getpid():  # jupyter_client usually starts kernels in a new session already
    os.setsid()
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
os.execv(sys.argv[4], sys.argv[4:])
"""


def limited_command(argv: list[str], limits: Limits) -> list[str]:
    """``argv`` started in a session of its own under ``limits``."""
    processes = user_task_count() + limits.processes
    return [sys.executable, "-c", _LAUNCHER, str(limits.memory_mb * 2**20), str(limits.cpu_seconds),
            str(processes), *argv]


def user_task_count() -> int:
    """Processes and threads this user runs now (what ``RLIMIT_NPROC`` counts)."""
    uid, count = os.getuid(), 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


@functools.cache
def namespaces_available() -> bool:
    """Whether ``bwrap`` can start a process in new namespaces here (Linux with user namespaces)."""
    if not sys.platform.startswith("linux") or shutil.which("bwrap") is None:
        return False
    try:
        probe = subprocess.run(["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
                                "--dev", "/dev", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def isolated_command(argv: list[str], folders: "Folders", hidden: Sequence[Path] = ()) -> list[str]:
    """``argv`` in new PID, mount, network, IPC, UTS and user namespaces: the filesystem read-only but
    for ``folders.root`` (its ``channel`` read-only too), the files and folders of ``hidden`` replaced
    by empty ones, no network; everything ends when ``argv`` ends or the grader dies."""
    command = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
               "--dev", "/dev", "--proc", "/proc"]
    folders_hidden = [path for path in hidden if path.is_dir()]
    # a path inside a hidden folder is hidden with it (and could not be mounted on there)
    outermost = [path for path in folders_hidden if not any(other in path.parents for other in folders_hidden)]
    for path in outermost:  # an empty folder there (made read-only below, once nothing is mounted inside)
        command += ["--tmpfs", str(path)]
    for path in hidden:  # a file by itself: empty there
        if path.is_file() and not any(folder in path.parents for folder in outermost):
            command += ["--ro-bind", "/dev/null", str(path)]
    command += ["--bind", str(folders.root), str(folders.root), "--ro-bind", str(folders.channel),
                str(folders.channel), "--chdir", str(folders.work),
                # a Jupyter kernel polls the pid of its launcher, which does not exist in the new PID
                # namespace, and would exit at once; 1 (init) turns the polling off (and keeps it quiet),
                # and --die-with-parent ends it with the grader instead
                "--setenv", "JPY_PARENT_PID", "1"]
    for path in outermost:
        command += ["--remount-ro", str(path)]
    command.append("--")
    return command + argv


class Folders:
    """The private folders of one submission under ``root``: ``work`` (cwd), ``home`` and ``tmp``."""

    def __init__(self, root: Path):
        self.root = root
        self.work, self.home, self.tmp = root / "work", root / "home", root / "tmp"
        # the grader's socket (read-only inside the namespaces) and the kernel's Jupyter channels: short
        # names, since a socket's path has at most 107 bytes
        self.channel, self.kernel = root / "ch", root / "k"
        for folder in (self.work, self.home, self.tmp, self.channel, self.kernel):
            folder.mkdir(parents=True)

    def environment(self, base: dict) -> dict:
        env = {**base, "HOME": str(self.home), "TMPDIR": str(self.tmp), "TMP": str(self.tmp), "TEMP": str(self.tmp)}
        env["MALLOC_ARENA_MAX"] = "2"  # glibc reserves address space per thread otherwise
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no .pyc written anywhere, the package's __pycache__ included
        env.pop("JUPYTER_RUNTIME_DIR", None)
        return env


# ---------------------------------------------------------------------------------------------
# Ending every process of a submission
# ---------------------------------------------------------------------------------------------


def become_subreaper() -> bool:
    """Orphaned descendants of this process are re-parented to it (Linux), so they can be found."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def descendants(root: int | None = None) -> set[tuple[int, str]]:
    """(pid, start time) of every living descendant of ``root`` (default: this process)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (name) "
        if fields[0] == "Z":  # already ended; its parent collects it
            continue
        children.setdefault(int(fields[1]), []).append((int(stat.parent.name), fields[19]))
    found, stack = set(), [root]
    while stack:
        for pid, started in children.get(stack.pop(), []):
            found.add((pid, started))
            stack.append(pid)
    return found


def end_new_processes(before: set[tuple[int, str]], grace: float = 0.0) -> int:
    """Kill every descendant that was not in ``before`` (until none is left); the number killed.
    ``grace``: seconds given first to those that are ending anyway (a sandbox's bwrap after its kernel),
    so that only what would have stayed is counted as left over."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        lingering = descendants() - before
        if not lingering:
            break
        time.sleep(0.05)
        for pid, _ in lingering:
            _reap(pid)
    killed: set[int] = set()
    for _ in range(100):
        new = descendants() - before
        if not new:
            break
        for pid, _ in new:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
        for pid, _ in new:
            _reap(pid)
    return len(killed)


def _reap(pid: int) -> None:
    """Collect the exit status of a killed process if it is (now) a child of this one."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------------------------------------
# The package must not change
# ---------------------------------------------------------------------------------------------


def fingerprint(package_dir: Path) -> dict[str, str]:
    """sha256 of every file of the package, ``__pycache__/*.pyc`` included, by path relative to it
    (the grader and the kernels read and write bytecode elsewhere, so no honest run changes them)."""
    hashes = {}
    for path in sorted(package_dir.rglob("*")):
        if path.is_file():
            hashes[str(path.relative_to(package_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
