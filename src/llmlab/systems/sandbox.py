"""A Python sandbox that contains hostile code: bubblewrap namespaces, an unprivileged user, rlimits.

    run_python("print(2 ** 10)", timeout_s=5.0, memory_mb=256)
    → PythonResult(stdout="1024\\n", stderr="", exit_code=0, timed_out=False, truncated=False, sandbox="bwrap")

The program runs as `python -I -` (isolated mode, code on stdin) inside `bwrap` with:

    filesystem   read-only /usr (and /bin, /lib... as on the host), the interpreter's prefix and
                 /etc/ld.so.cache; a private writable /workspace (the `workspace` argument, else a
                 fresh temporary folder, deleted afterwards); a size-capped tmpfs /tmp; its own
                 /proc and /dev. Nothing else of the host is visible: not /home, /root, /work, /tmp.
    namespaces   own network (no interfaces but a down loopback: no connection goes anywhere), own
                 PID namespace (the program sees only itself; when it ends, every process left in
                 the namespace is killed by the kernel), own IPC and UTS; --die-with-parent, --new-session.
    user         when we are root (CI is), bwrap starts as root and `setpriv` drops to nobody
                 (65534) with every capability cleared before Python starts: process-count limits do
                 not bind root. Otherwise the program runs as the calling user.
    rlimits      CPU seconds (timeout + 1), address space (memory_mb), processes (max_procs more
                 than the user already runs), file size (max_file_mb), open files, no core dumps.
    wall clock   `timeout_s`; then the whole process group is killed (SIGKILL) and timed_out=True.
    environment  scrubbed: only PATH, HOME=/workspace, LANG and PYTHONIOENCODING.
    output       stdout and stderr each cut at `max_output` characters with a marker (the rest is
                 read and dropped, so a flood cannot fill memory).

`sandbox="rlimits"` (or "auto" where bwrap is missing, with a loud warning on stderr) keeps the
user drop, rlimits, timeout, process-group kill and scrubbed environment but has no namespaces: the
program can read the host's files and open network connections. Do not run untrusted code that way.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from llmlab.errors import UserError

SANDBOXES = ("auto", "bwrap", "rlimits")
NOBODY = 65534
TMP_BYTES = 64 << 20
MARKER = "\n[... output truncated]"
_warned = False


@dataclass
class PythonResult:
    """What a sandboxed program did. exit_code is negative for a signal (-9: killed); `sandbox` says
    which containment ran ("bwrap" or "rlimits")."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool
    truncated: bool
    sandbox: str = "bwrap"

    def as_text(self) -> str:
        """The result as a tool returns it to a model."""
        parts = [self.stdout.rstrip("\n")] if self.stdout.strip() else []
        if self.stderr.strip():
            parts.append("stderr:\n" + self.stderr.rstrip("\n"))
        if self.timed_out:
            parts.append("error: the program was killed at its time limit")
        elif self.exit_code:
            parts.append(f"exit code {self.exit_code}")
        return "\n".join(parts) or "(no output)"


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _resolve_sandbox(sandbox: str) -> str:
    global _warned
    if sandbox not in SANDBOXES:
        raise UserError(f"sandbox: unknown mode {sandbox!r}; choose one of {', '.join(SANDBOXES)}")
    if sandbox == "bwrap" and bwrap_path() is None:
        raise UserError("sandbox=bwrap: bubblewrap is not installed (apt-get install bubblewrap)")
    if sandbox == "auto":
        sandbox = "bwrap" if bwrap_path() else "rlimits"
    if sandbox == "rlimits" and not _warned:
        _warned = True
        print(
            "llmlab: WARNING: the Python sandbox runs WITHOUT bubblewrap (rlimits only): the program "
            "can read host files and use the network; install bubblewrap for isolation",
            file=sys.stderr,
        )
    return sandbox


def _tasks_of(uid: int) -> int:
    """How many processes (threads count, as for RLIMIT_NPROC) `uid` runs now."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{pid}/task"))
            except OSError:
                continue  # the process ended meanwhile
    return n


def _limits(timeout_s: float, memory_mb: int, nproc: int, max_file_mb: int, max_open_files: int):
    """The preexec function: rlimits set in the child before it execs (and before any uid drop)."""
    cpu = math.ceil(timeout_s) + 1
    caps = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (memory_mb << 20,) * 2),
        (resource.RLIMIT_NPROC, (nproc,) * 2),
        (resource.RLIMIT_FSIZE, (max_file_mb << 20,) * 2),
        (resource.RLIMIT_NOFILE, (max_open_files,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ]

    def apply() -> None:
        for what, value in caps:
            resource.setrlimit(what, value)

    return apply


def _system_binds() -> list[str]:
    """The host's system folders, read-only (symlinks such as /bin → usr/bin recreated as links)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    for f in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(f):
            args += ["--ro-bind", f, f]
    return args


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner may traverse every folder above `path` (o+x)."""
    return all(os.stat(p).st_mode & 0o001 for p in path.parents)


def _interpreter(drop_to_nobody: bool, mode: str) -> str:
    """This Python; without bwrap a user dropped to nobody needs one it can reach (/usr/bin/python3
    when this one sits under /root)."""
    python = Path(sys.executable).resolve()
    if mode == "bwrap" or not drop_to_nobody or _reachable_by_others(python):
        return str(python)
    system = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if system is None:
        raise UserError(f"sandbox=rlimits: user nobody cannot run {python} and there is no /usr/bin/python3")
    return system


def _bwrap_command(python: str, workspace: Path, drop_to_nobody: bool) -> list[str]:
    prefix = str(Path(sys.base_prefix).resolve())
    cmd = [bwrap_path() or "bwrap", *_system_binds()]
    if not prefix.startswith("/usr"):
        cmd += ["--ro-bind", prefix, prefix]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    cmd += ["--bind", str(workspace), "/workspace", "--chdir", "/workspace", "--hostname", "sandbox"]
    cmd += ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not drop_to_nobody:
        cmd += ["--unshare-user"]
    cmd += ["--die-with-parent", "--new-session", "--"]
    if drop_to_nobody:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise UserError("the sandbox runs as root and needs setpriv (util-linux) to drop to nobody")
        cmd += [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        cmd += ["--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--"]
    return [*cmd, python, "-I", "-"]


class _Capped:
    """Reads a pipe to its end on a thread, keeping the first `limit` bytes and dropping the rest."""

    def __init__(self, pipe, limit: int):
        self.pipe, self.limit, self.data, self.dropped = pipe, limit, bytearray(), 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := self.pipe.read(65536):
            room = self.limit - len(self.data)
            self.data += chunk[: max(room, 0)]
            self.dropped += max(len(chunk) - max(room, 0), 0)
        self.pipe.close()

    def text(self) -> str:
        self.thread.join(5.0)
        text = self.data.decode("utf-8", errors="replace")
        return text + MARKER if self.dropped else text


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_python(
    code: str,
    timeout_s: float = 5.0,
    memory_mb: int = 256,
    workspace: str | os.PathLike | None = None,
    max_output: int = 8000,
    max_procs: int = 32,
    max_file_mb: int = 16,
    max_open_files: int = 64,
    sandbox: str = "auto",
) -> PythonResult:
    """Run `code` with `python -I` in the sandbox described in the module docstring."""
    if not isinstance(code, str):
        raise UserError(f"run_python: code must be a string, got {type(code).__name__}")
    if not (timeout_s > 0 and memory_mb >= 32 and max_procs >= 1):
        raise UserError("run_python: need timeout_s > 0, memory_mb >= 32 and max_procs >= 1")
    mode = _resolve_sandbox(sandbox)
    root = os.geteuid() == 0
    uid = NOBODY if root else os.getuid()
    own = workspace is None
    ws = Path(tempfile.mkdtemp(prefix="llmlab-sandbox-") if own else workspace).resolve()
    ws.mkdir(parents=True, exist_ok=True)
    if root:
        os.chown(ws, NOBODY, NOBODY)  # the unprivileged user writes here and only here
    python = _interpreter(root, mode)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/workspace", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    if mode == "bwrap":
        cmd, cwd, user = _bwrap_command(python, ws, drop_to_nobody=root), None, None
    else:
        cmd, cwd, user = [python, "-I", "-"], str(ws), (NOBODY if root else None)
    preexec = _limits(timeout_s, memory_mb, _tasks_of(uid) + max_procs, max_file_mb, max_open_files)
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
            start_new_session=True,  # its own process group: the timeout kills all of it
            preexec_fn=preexec,
        )
        out, err = _Capped(proc.stdout, max_output), _Capped(proc.stderr, max_output)
        try:
            proc.stdin.write(code.encode("utf-8"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc)  # also after a normal exit: children left sleeping in the group go too
        proc.wait()
        stdout, stderr = out.text(), err.text()
        return PythonResult(
            stdout, stderr, proc.returncode, timed_out, bool(out.dropped or err.dropped), sandbox=mode
        )
    finally:
        if own:
            shutil.rmtree(ws, ignore_errors=True)
