"""Run ``rsgeo`` commands in forks of one warm process (tests that run many CLI commands).

Importing torch, torchvision and timm takes 4-8 s on 2 cores, and ``tests/test_readme.py``
runs about 25 commands that need them: most of its time went to imports. :func:`server`
starts a process that imports rsgeo, torch, timm, rasterio, geopandas, onnx and onnxruntime
once, then forks a child for every command: the child takes the caller's stdin, stdout,
stderr (passed over a Unix socket), working folder, environment and arguments, runs
``rsgeo.cli.app.main`` and reports its exit code. :func:`shim_dir` writes an ``rsgeo``
script for the front of ``PATH`` that hands its command to the server, or runs the
installed ``rsgeo`` itself when no server answers. Shell pipelines, ``jq`` and scripts run
as before; only the ``rsgeo`` they call starts warm.

The fork happens before torch runs any parallel region (OpenMP's threads would not survive
it); every child resets the signal handlers the server changed.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

SHIM = """#!{python} -S
import json, os, socket, sys
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect({sock!r})
except OSError:
    os.execv({real!r}, [{real!r}, *sys.argv[1:]])
msg = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}})
socket.send_fds(s, [msg.encode()], [0, 1, 2])
s.shutdown(socket.SHUT_WR)
reply = b"".join(iter(lambda: s.recv(64), b""))
sys.exit(int(reply) if reply.strip() else 1)
"""


def _child(conn: socket.socket, listener: socket.socket) -> None:
    """In the forked child: become the caller's command, run it, report its exit code."""
    import signal

    listener.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # subprocess.wait needs its children
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    chunks, fds = [], []
    while True:
        data, got, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        fds += got
        if not data:
            break
        chunks.append(data)
    msg = json.loads(b"".join(chunks))
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    os.chdir(msg["cwd"])
    os.environ.clear()
    os.environ.update(msg["env"])
    sys.argv = ["rsgeo", *msg["argv"]]
    code = 1
    try:
        from rsgeo.cli.app import main

        code = main(msg["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        conn.sendall(str(code).encode())
        conn.close()
        os._exit(code)


# What the commands import on first use beyond the imports above; left out, every fork imports
# them again: 0.3-1.1 s of each command (measured for evaluate, damage-map, finetune:
# scipy.ndimage 0.45 s, Typer's option parsing with pydantic 0.1 s, the rsgeo modules)
WARM = ("scipy.ndimage", "pydantic", "typer._adapters", "rsgeo.synth", "rsgeo.data.prepare",
        "rsgeo.pretrain", "rsgeo.finetune", "rsgeo.infer.export", "rsgeo.infer.predict",
        "rsgeo.damage", "rsgeo.footprints", "rsgeo.evaluate")


def serve(sock_path: str) -> None:
    """Import the heavy modules, then fork a :func:`_child` for every connection."""
    import signal

    import rsgeo  # noqa: F401 - first: it sets OpenMP's wait policy before torch loads
    import rsgeo.cli.app  # noqa: F401
    import geopandas  # noqa: F401
    import onnx  # noqa: F401 - every command that exports or reads an .onnx model: 0.8 s each
    import onnxruntime  # noqa: F401
    import rasterio  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401

    for name in WARM:   # none of them starts torch's OpenMP threads (see the module docstring)
        try:
            importlib.import_module(name)
        except ImportError:  # a private module that moved: its commands import it themselves
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # children reap themselves
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(sock_path + ".tmp")
    os.rename(sock_path + ".tmp", sock_path)      # appears only once it is ready
    listener.listen(8)
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            _child(conn, listener)
        conn.close()


def shim_dir(folder: Path, sock_path: str) -> Path:
    """``folder/rsgeo``: a script that hands its command to the server at ``sock_path``."""
    real = str(Path(sys.executable).parent / "rsgeo")
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "rsgeo"
    shim.write_text(SHIM.format(python=sys.executable, sock=sock_path, real=real))
    shim.chmod(0o755)
    return folder


@contextmanager
def server(folder: Path, env: dict, wait: float = 120.0):
    """Start a server (its socket in ``folder``) and yield the folder of its ``rsgeo`` shim;
    the shim runs the installed ``rsgeo`` whenever the server is not (or not yet) there."""
    sock = str(folder / "rsgeo.sock")
    proc = subprocess.Popen([sys.executable, __file__, sock], env=env, cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while not os.path.exists(sock) and proc.poll() is None and time.monotonic() - t0 < wait:
            time.sleep(0.1)
        yield shim_dir(folder / "bin", sock)
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
