"""Run a verifier call under a wall-clock bound, from the main thread, from worker threads and from processes.

math-verify bounds its own work with signal.alarm, which raises ValueError off the main thread. So we call it with
its own timeouts disabled and bound it here, one way or the other:

- main thread (and no ITIMER_REAL of someone else running): in-process under signal.setitimer. The handler raises
  _Timeout, a BaseException, so that sympy's and math-verify's `except Exception` cannot swallow it. Fast: no IPC.
- anywhere else (worker threads; or isolate=True): in a persistent worker process started with subprocess, fed
  pickled (fn, args) over a pipe and waited for with select(). On timeout, or if it dies, the worker is killed and
  a fresh one is started on the next call. Each concurrent caller gets its own worker (at most MAX_WORKERS, then
  callers wait for a free one), so threads verify in parallel. A plain subprocess rather than multiprocessing:
  it works from daemonic pool workers, never re-imports the caller's __main__, and is safe after fork.

`fn` must be a module-level function (it is pickled by name) and should be pure. Any exception in it, a timeout or
a dead worker all give `default`: for a verifier that means "incorrect", and the caller never sees an exception.

subtle: a signal is only handled between bytecodes, so on the main-thread path a single C-level operation (say a
huge integer power) could overrun the bound. The sympy paths that math-verify takes evaluate such powers in Python
(measured: 9^{9^{9^{9}}} against 42 stops at the bound); pass isolate=True for a hard bound at ~0.1 ms per call.
subtle: two waits are not counted in the bound: for a free worker (with more threads than MAX_WORKERS a call can
wait for other calls, each of them bounded), and for a worker's start after a timeout killed its predecessor (the
first call it serves imports fn's module: ~0.5 s for sympy + math-verify, capped by STARTUP_TIMEOUT_S).
"""
from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time

_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
MAX_WORKERS = min(8, max(2, _CPUS))  # at least 2, so one hung call cannot stall every other thread
STARTUP_TIMEOUT_S = 60.0  # a cold worker imports fn's module (sympy: ~0.5 s) before its first call; not in the bound
_HEADER = 8  # bytes of the little-endian frame length
RETRY_S = 0.05  # after the deadline, the alarm fires again this often until the call has stopped


class _Timeout(BaseException):
    pass


def call_bounded(fn, args: tuple, timeout_s: float, default, isolate: bool | None = None):
    """fn(*args), or `default` when it raises, runs past timeout_s seconds or its worker dies.

    isolate=None runs in-process on the main thread and in a worker process elsewhere; True always isolates.
    call_bounded(pow, (2, 10), timeout_s=1.0, default=None) == 1024
    """
    if not isolate and _can_alarm():
        return _call_with_alarm(fn, args, timeout_s, default)
    return _pool().call(fn, args, timeout_s, default)


def _can_alarm() -> bool:
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
            and signal.getsignal(signal.SIGALRM) is not None)  # None: a handler installed from C, not restorable


def _raise_timeout(signum, frame):
    raise _Timeout


def _call_with_alarm(fn, args, timeout_s, default):
    old = signal.signal(signal.SIGALRM, _raise_timeout)
    try:
        # subtle: the interval re-raises every RETRY_S after the deadline. An exception raised inside a gc callback
        # or a __del__ is printed and dropped ("Exception ignored in ..."), and the verifier would then run on to
        # its end (seen in CI: 3.2 s against a 1 s bound, the first _Timeout lost in hypothesis's gc callback).
        signal.setitimer(signal.ITIMER_REAL, timeout_s, RETRY_S)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:  # subtle: may also fire just after fn returned, before the timer was cleared: still default
        return default
    except Exception:
        return default
    finally:
        signal.signal(signal.SIGALRM, old)


# --- the worker process --------------------------------------------------------------------------------------------

def _write_frame(fd: int, payload: bytes) -> None:
    data = len(payload).to_bytes(_HEADER, "little") + payload
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _Timeout
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("verifier worker closed its pipe")
        buf += chunk
    return bytes(buf)


def _read_frame(fd: int, deadline: float | None) -> bytes:
    n = int.from_bytes(_read_exact(fd, _HEADER, deadline), "little")
    return _read_exact(fd, n, deadline)


def _serve() -> None:
    """The worker's loop: read (fn, args), answer ("ok", value) or ("error", message); exit when the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; we exit on EOF when it goes
    fd_in, fd_out = sys.stdin.fileno(), os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print() in fn must not corrupt the protocol
    while True:
        try:
            request = _read_frame(fd_in, None)
        except EOFError:
            return
        try:
            fn, args = pickle.loads(request)  # imports fn's module the first time
            reply = ("ok", None if args is None else fn(*args))  # args None: only that import
        except Exception as e:
            reply = ("error", f"{type(e).__name__}: {str(e)[:200]}")
        try:
            payload = pickle.dumps(reply)
        except Exception as e:
            payload = pickle.dumps(("error", f"unpicklable result: {e}"))
        _write_frame(fd_out, payload)


class _Worker:
    def __init__(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # import r1lab as we do
        self.proc = subprocess.Popen([sys.executable, "-c", "from r1lab.tasks.verify_timeout import _serve; _serve()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        self.loaded = set()  # functions whose module the worker has imported

    def call(self, fn, request: bytes, timeout_s: float):
        if fn not in self.loaded:  # the first use imports fn's module, which must not eat into the bound
            self._roundtrip(pickle.dumps((fn, None)), STARTUP_TIMEOUT_S)
            self.loaded.add(fn)
        return self._roundtrip(request, timeout_s)

    def _roundtrip(self, request: bytes, timeout_s: float):
        _write_frame(self.proc.stdin.fileno(), request)
        status, value = pickle.loads(_read_frame(self.proc.stdout.fileno(), time.monotonic() + timeout_s))
        if status != "ok":
            raise RuntimeError(value)
        return value

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


class _Pool:
    def __init__(self):
        self.idle: list[_Worker] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_WORKERS)

    def call(self, fn, args, timeout_s: float, default):
        request = pickle.dumps((fn, args))  # outside the try: an unpicklable fn is the caller's bug, so it raises
        with self.slots:
            with self.lock:
                worker = self.idle.pop() if self.idle else None
            try:
                worker = worker or _Worker()
                result = worker.call(fn, request, timeout_s)
            except RuntimeError:  # fn raised in the worker, which is still healthy
                result = default
            except (_Timeout, OSError, EOFError, pickle.PickleError, ValueError):
                if worker is not None:  # hung, dead or out of step: never reuse it
                    worker.kill()
                return default
            with self.lock:
                self.idle.append(worker)
            return result

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.kill()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _Pool()
        return _POOL


def shutdown() -> None:
    """Stop the idle worker processes (they also exit on their own when this process ends)."""
    if _POOL is not None:
        _POOL.close()


def _forget_pool_after_fork() -> None:
    # subtle: a forked child shares the parent's pipes; it must start its own workers (and close its copies of the
    # parent's pipes, so those workers still see EOF when the parent goes), and a lock held by another thread at
    # fork time would never be released in the child.
    global _POOL, _POOL_LOCK
    for worker in _POOL.idle if _POOL is not None else []:
        worker.proc.stdin.close()
        worker.proc.stdout.close()
    _POOL, _POOL_LOCK = None, threading.Lock()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)
