"""Running a real Triton Inference Server on a model repository.

The ``serve`` extra installs ``nvidia-pytriton``, whose wheel ships the ``tritonserver`` binary
with the Python backend (CPU-capable; glibc >= 2.35). Its Python-backend stub is an embedded
Python: it links ``libpython3.X`` and finds its packages from the ``python3`` it meets first on
``PATH``. :func:`server_environment` points both at the Python running xomni, so the pipeline
models import the very packages (and the very interpreter) that ``xomni serve`` runs with, virtual
environments included.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from xomni_core import XomniError

INSTALL_HINT = "pip install 'xomni[serve]' (nvidia-pytriton ships tritonserver with the Python backend)"
MIN_PYTRITON = (0, 7)


@dataclass(frozen=True)
class TritonInstall:
    """Where the server binary, its Python backend and its libraries are."""

    binary: Path
    python_backend: Path
    stubs: Path
    libraries: Path | None

    @classmethod
    def find(cls) -> TritonInstall:
        """The Triton that ``nvidia-pytriton`` installed, or an error saying how to get it."""
        spec = importlib.util.find_spec("pytriton")
        if spec is None or spec.origin is None:
            raise XomniError(f"serving needs Triton Inference Server: {INSTALL_HINT}")
        version = metadata.version("nvidia-pytriton")
        if tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) < MIN_PYTRITON:
            raise XomniError(
                f"nvidia-pytriton {version} is installed; serving needs {'.'.join(map(str, MIN_PYTRITON))} "
                f"or newer (older Python backends misread text inputs under numpy 2): {INSTALL_HINT}"
            )
        package = Path(spec.origin).parent
        root = package / "tritonserver"
        binary = root / "bin" / "tritonserver"
        if not binary.is_file():
            raise XomniError(f"{binary} is missing: reinstall with {INSTALL_HINT}")
        libraries = package.parent / "nvidia_pytriton.libs"
        return cls(
            binary,
            root / "backends" / "python",
            root / "python_backend_stubs",
            libraries if libraries.is_dir() else None,
        )

    def backend_directory(self, workdir: Path) -> Path:
        """A backend folder whose Python backend runs this Python's version of the stub."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.stubs / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise XomniError(f"Triton's Python backend has no stub for Python {version} (looked for {stub})")
        python = workdir / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        for source in [*self.python_backend.glob("*.so"), *self.python_backend.glob("*.py"), stub]:
            target = python / source.name
            if not target.exists():
                shutil.copy2(source, target)
        return workdir / "backends"


def server_environment(install: TritonInstall) -> dict[str, str]:
    """The environment for ``tritonserver``: this Python first on ``PATH``, its ``libpython`` and
    Triton's libraries on ``LD_LIBRARY_PATH``, its package folders on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libraries = [str(install.libraries)] if install.libraries else []
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlibrary = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlibrary and (Path(libdir) / ldlibrary).is_file():
        libraries.insert(0, libdir)
    elif not any(Path(p).is_file() for p in _system_libpython()):
        raise XomniError(
            f"Triton's Python backend needs the shared library of Python {sys.version_info.major}."
            f"{sys.version_info.minor}, which this Python does not have; install it (Debian: apt install "
            f"libpython{sys.version_info.major}.{sys.version_info.minor}) or use a Python built with "
            "--enable-shared"
        )
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libraries, env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    paths = [
        *site.getsitepackages(),
        *[p for p in sys.path if p and Path(p).is_dir() and "site-packages" not in p],
    ]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*paths, env.get("PYTHONPATH", "")])).rstrip(os.pathsep)
    return env


def _stop_with_parent() -> None:
    """In the child before exec: ask Linux to send SIGTERM when the parent dies, so that a killed
    ``xomni serve`` leaves no server holding its ports."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _system_libpython() -> list[str]:
    name = f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
    return [
        f"/usr/lib/x86_64-linux-gnu/{name}",
        f"/usr/lib/aarch64-linux-gnu/{name}",
        f"/usr/lib64/{name}",
        f"/usr/lib/{name}",
    ]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different ports that nothing listens on now (another process may take one
    before it is used)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class Endpoints:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"


class TritonServer:
    """A ``tritonserver`` process on ``repository``, serving ``models`` (all when ``None``)."""

    def __init__(
        self,
        repository: str | Path,
        endpoints: Endpoints,
        *,
        models: Sequence[str] | None = None,
        workdir: str | Path,
        log_path: str | Path | None = None,
        install: TritonInstall | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.endpoints = endpoints
        self.models = list(models) if models is not None else None
        self.workdir = Path(workdir)
        self.log_path = Path(log_path) if log_path else self.workdir / "tritonserver.log"
        self.install = install or TritonInstall.find()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        host, ep = self.endpoints.host, self.endpoints
        args = [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backend_directory(self.workdir)}",
            f"--http-address={host}",
            f"--http-port={ep.http_port}",
            f"--grpc-address={host}",
            f"--grpc-port={ep.grpc_port}",
            f"--metrics-address={host}",
            f"--metrics-port={ep.metrics_port}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--exit-timeout-secs=10",
        ]
        if self.models is not None:
            args.append("--model-control-mode=explicit")
            args += [f"--load-model={name}" for name in self.models]
        return args

    def start(self, timeout: float = 300.0) -> None:
        """Start the server and wait until it and its models are ready; on failure the error
        holds the end of the server's log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = server_environment(self.install)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise XomniError(
                    f"tritonserver exited with status {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise XomniError(f"tritonserver was not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def ready(self) -> bool:
        """Whether the server answers and every model it serves is ready."""
        paths = ["/v2/health/ready", *[f"/v2/models/{name}/ready" for name in self.models or []]]
        try:
            for path in paths:
                with urllib.request.urlopen(f"http://{self.endpoints.http}{path}", timeout=2) as response:
                    if response.status != 200:
                        return False
        except (urllib.error.URLError, OSError):
            return False
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` s) with its Python stubs."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """Kill the server at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    @contextlib.contextmanager
    def running(self, timeout: float = 300.0) -> Iterator[TritonServer]:
        self.start(timeout)
        try:
            yield self
        finally:
            self.stop()
