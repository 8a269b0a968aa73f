"""Hostile programs against the Python sandbox; each test checks from outside that the effect did not
happen (the file is not there, the listener saw no connection, no process is left), not only an exit
code. Bounded floods only: at most a few hundred processes, never kill(-1)."""

from __future__ import annotations

import os
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from llmlab.systems import sandbox
from llmlab.systems.sandbox import NOBODY, run_python
from llmlab.systems.tools import make_read_file

pytestmark = pytest.mark.skipif(sandbox.bwrap_path() is None, reason="bubblewrap (bwrap) is not installed")
ROOT = os.geteuid() == 0


def run(code: str, **kw):
    kw.setdefault("timeout_s", 3.0)
    return run_python(textwrap.dedent(code), **kw)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    d = tmp_path / "ws"
    d.mkdir()
    return d


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    yield s
    s.close()


def saw_connection(s: socket.socket) -> bool:
    try:
        s.accept()[0].close()
        return True
    except BlockingIOError:
        return False


def host_processes_with(token: str) -> list[str]:
    """Host pids whose command line contains `token` (processes a program tried to leave behind)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(pid)
        except OSError:
            continue
    return found


# ---- the ordinary case -------------------------------------------------------------------------------


def test_a_program_runs_and_prints():
    r = run("print(2 ** 10)")
    assert (r.stdout, r.exit_code, r.timed_out, r.truncated, r.sandbox) == (
        "1024\n",
        0,
        False,
        False,
        "bwrap",
    )


def test_the_workspace_is_writable_and_kept_when_given(ws):
    r = run("open('out.txt', 'w').write('hello')", workspace=ws)
    assert r.exit_code == 0 and (ws / "out.txt").read_text() == "hello"


@pytest.mark.skipif(not ROOT, reason="the uid drop happens only when the caller is root")
def test_runs_as_nobody_without_capabilities():
    r = run(
        "import os; print(os.getuid(), os.getgid(), os.getgroups()); print(open('/proc/self/status').read())"
    )
    first, status = r.stdout.split("\n", 1)
    assert first == f"{NOBODY} {NOBODY} []"
    assert "CapEff:\t0000000000000000" in status and "CapBnd:\t0000000000000000" in status


# ---- the filesystem -----------------------------------------------------------------------------------


def test_writing_outside_the_workspace_leaves_no_file(tmp_path, ws):
    target = tmp_path / "pwned.txt"
    r = run(f"open({str(target)!r}, 'w').write('x')", workspace=ws)
    assert r.exit_code != 0 and not target.exists()


def test_writing_into_the_system_is_refused(tmp_path):
    target = Path(sandbox.sys.base_prefix) / f"pwned-{uuid.uuid4().hex}"
    r = run(f"open({str(target)!r}, 'w').write('x')")
    assert "Read-only file system" in r.stderr or "Permission denied" in r.stderr
    assert not target.exists()


def test_reading_a_host_file_outside_the_workspace_fails(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    r = run(f"print(open({str(secret)!r}).read())")
    assert "TOP-SECRET-42" not in r.stdout and "No such file" in r.stderr


def test_home_and_work_folders_are_not_visible():
    r = run("import os; print(sorted(os.listdir('/')))")
    top = eval(r.stdout)  # a list of names printed by the program
    assert not {"home", "work", "srv", "mnt", "opt"} & set(top)


def test_tmp_is_private(tmp_path):
    marker = f"llmlab-sandbox-marker-{uuid.uuid4().hex}"
    run(f"open('/tmp/{marker}', 'w').write('x')")
    assert not Path("/tmp", marker).exists()


def test_a_symlink_out_of_the_workspace_reads_nothing(tmp_path, ws):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-43")
    r = run(f"import os; os.symlink({str(secret)!r}, 'link'); print(open('link').read())", workspace=ws)
    assert "TOP-SECRET-43" not in r.stdout
    # ...and the link it left behind does not fool the host-side read_file tool either
    assert "outside the workspace" in make_read_file(ws).run({"path": "link"})


def test_a_huge_file_is_cut_at_the_file_size_limit(ws):
    r = run(
        "f = open('big', 'wb')\nfor _ in range(64): f.write(b'x' * (1 << 20))", workspace=ws, max_file_mb=4
    )
    assert r.exit_code != 0  # SIGXFSZ or OSError
    assert (ws / "big").stat().st_size <= 4 << 20


def test_filling_tmp_stops_at_its_size():
    code = """
    n = 0
    try:
        for i in range(40):
            with open(f'/tmp/f{i}', 'wb') as f:
                for _ in range(4):
                    f.write(b'x' * (1 << 20)); n += 1
    except OSError as e:
        print('stopped', e.errno)
    print(n)
    """
    r = run(code, max_file_mb=8)
    assert "stopped" in r.stdout and int(r.stdout.split()[-1]) <= sandbox.TMP_BYTES >> 20


# ---- the network ---------------------------------------------------------------------------------------


def test_connecting_to_a_loopback_listener_fails(listener):
    port = listener.getsockname()[1]
    r = run(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1)")
    assert r.exit_code != 0 and not saw_connection(listener)


def test_connecting_to_the_hosts_own_address_fails():
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen(1)
    s.setblocking(False)
    try:
        host_ip = socket.gethostbyname(socket.gethostname())
        r = run(f"import socket; socket.create_connection(({host_ip!r}, {s.getsockname()[1]}), timeout=1)")
        assert r.exit_code != 0 and not saw_connection(s)
    finally:
        s.close()


def test_udp_to_a_loopback_listener_arrives_nowhere():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    u.setblocking(False)
    try:
        port = u.getsockname()[1]
        run(
            f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hi', ('127.0.0.1', {port}))"
        )
        with pytest.raises(BlockingIOError):
            u.recvfrom(16)
    finally:
        u.close()


def test_an_abstract_unix_socket_of_the_host_is_unreachable():
    name = f"\0llmlab-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX)
    s.bind(name)
    s.listen(1)
    s.setblocking(False)
    try:
        r = run(f"import socket; socket.socket(socket.AF_UNIX).connect({name!r})")
        assert r.exit_code != 0 and not saw_connection(s)
    finally:
        s.close()


def test_a_unix_socket_file_of_the_host_is_not_visible(tmp_path):
    path = str(tmp_path / "sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(1)
    s.setblocking(False)
    try:
        r = run(f"import socket; socket.socket(socket.AF_UNIX).connect({path!r})")
        assert r.exit_code != 0 and not saw_connection(s)
    finally:
        s.close()


# ---- processes -------------------------------------------------------------------------------------------


def test_a_process_flood_is_capped_and_leaves_nothing():
    token = f"flood{uuid.uuid4().hex[:8]}"
    code = f"""
    import os, time
    n = 0
    for _ in range(300):
        try:
            if os.fork() == 0:
                os.execv('/bin/sleep', ['{token}', '30'])  # argv[0] marks it
            n += 1
        except OSError:
            break
    print(n)
    """
    r = run(code, max_procs=16)
    assert int(r.stdout.split()[0]) <= 16
    assert host_processes_with(token) == []


def test_a_thread_flood_is_capped():
    code = """
    import threading, time
    n = 0
    try:
        for _ in range(500):
            threading.Thread(target=time.sleep, args=(5,), daemon=True).start(); n += 1
    except RuntimeError:
        pass
    print(n)
    """
    assert int(run(code, max_procs=16).stdout.split()[0]) <= 16


def test_sleeping_children_are_killed_with_the_group():
    token = f"left{uuid.uuid4().hex[:8]}"
    code = f"""
    import subprocess
    subprocess.Popen(['{token}', '30'], executable='/bin/sleep')
    subprocess.Popen(['{token}', '30'], executable='/bin/sleep', start_new_session=True)  # own group
    print('spawned')
    """
    r = run(code)
    assert r.stdout == "spawned\n" and host_processes_with(token) == []


def test_a_double_forked_daemon_is_killed_too():
    token = f"daemon{uuid.uuid4().hex[:8]}"
    code = f"""
    import os
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv('/bin/sleep', ['{token}', '30'])  # argv[0] marks it
        os._exit(0)
    print('done')
    """
    run(code)
    assert host_processes_with(token) == []


def test_the_program_sees_only_its_own_processes():
    r = run(f"import os; print([p for p in os.listdir('/proc') if p.isdigit()]); print({os.getpid()})")
    pids, mine = r.stdout.split("\n")[:2]
    assert len(eval(pids)) <= 3 and mine not in eval(pids)


def test_killing_the_parent_or_the_caller_fails():
    code = f"""
    import os, signal
    for pid in (os.getppid(), {os.getpid()}, {os.getppid()}):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError as e:
            print('refused', pid, e.errno)
    """
    run(code)
    os.kill(os.getpid(), 0)  # this test process and its parent are still alive
    os.kill(os.getppid(), 0)


def test_a_busy_loop_is_killed_at_the_timeout(ws):
    r = run("while True: pass\nopen('after', 'w')", timeout_s=1.0, workspace=ws)
    assert r.timed_out and r.exit_code == -9 and not (ws / "after").exists()


def test_a_sleep_past_the_timeout_is_killed(ws):
    r = run("import time; time.sleep(30); open('after', 'w')", timeout_s=0.5, workspace=ws)
    assert r.timed_out and not (ws / "after").exists()


def test_spawning_sh_cannot_reach_the_host(tmp_path):
    target = tmp_path / "from-sh"
    secret = tmp_path / "secret"
    secret.write_text("SH-SECRET")
    r = run(
        f"import subprocess; print(subprocess.run(['sh', '-c', 'cat {secret}; echo x > {target}'], capture_output=True))"
    )
    assert not target.exists() and "SH-SECRET" not in r.stdout


# ---- memory, output, files, environment, privileges ------------------------------------------------------


def test_a_memory_bomb_fails_inside(ws):
    r = run("b = bytearray(2 << 30)\nopen('after', 'w')", memory_mb=256, workspace=ws)
    assert "MemoryError" in r.stderr and not (ws / "after").exists()


def test_huge_output_is_truncated_with_a_marker():
    r = run("import sys\nfor _ in range(2000): sys.stdout.write('y' * 10000)", max_output=1000)
    assert r.truncated and r.stdout.endswith(sandbox.MARKER) and len(r.stdout) == 1000 + len(sandbox.MARKER)


def test_opening_many_files_is_capped():
    code = """
    fs = []
    try:
        for i in range(5000): fs.append(open('/dev/null'))
    except OSError:
        pass
    print(len(fs))
    """
    assert int(run(code, max_open_files=32).stdout) < 32


def test_the_parents_environment_is_not_readable(monkeypatch):
    monkeypatch.setenv("LLMLAB_TEST_SECRET", "ENV-SECRET-77")
    code = """
    import os
    print(dict(os.environ))
    for p in ('/proc/1/environ', '/proc/self/environ'):
        try: print(open(p, 'rb').read())
        except OSError as e: print('refused', e)
    """
    r = run(code)
    assert "ENV-SECRET-77" not in r.stdout and "LLMLAB_TEST_SECRET" not in r.stdout


def test_ctypes_calls_into_libc_gain_nothing(tmp_path):
    target = tmp_path / "ctypes-pwned"
    code = f"""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    print(libc.setuid(0), libc.setgid(0), os.getuid() == 0)
    print(libc.mount(b'none', b'/usr', b'tmpfs', 0, None))
    print(libc.system(b'echo x > {target}'))
    """
    r = run(code)
    lines = r.stdout.split("\n")
    assert lines[0].split()[:2] == ["-1", "-1"] and lines[0].endswith("False") and lines[1] == "-1"
    assert not target.exists()


def test_writing_kernel_settings_fails():
    r = run("open('/proc/sys/kernel/hostname', 'w').write('pwned')")
    assert r.exit_code != 0 and socket.gethostname() != "pwned"


@pytest.mark.skipif(not ROOT, reason="the uid drop happens only when the caller is root")
def test_nested_privilege_gain_is_refused():
    r = run(
        "import os\ntry:\n    os.setuid(0)\nexcept PermissionError:\n    print('refused')\nprint(os.getuid())"
    )
    assert r.stdout.split() == ["refused", str(NOBODY)]
