"""Run a verifier call under a hard bound on its time and memory, from the main thread, worker threads and processes.

    call_bounded(fn, args, timeout_s, default)    fn(*args), or `default` if it raises, overruns or runs out of memory

math-verify bounds its own work with signal.alarm, which raises ValueError off the main thread, and an alarm is no
bound anyway: a signal is only handled between bytecodes, so one C-level operation (a huge integer power) runs to
its end, and nothing bounds its memory (measured with the alarm: `(10^{10^{10}})!` against `10^{10^{10}}` took
20 s and 8.7 GB under a 2 s bound). So the call runs in a worker process that can be killed:

- Workers are forked from a template process (a fork server) that imported fn's module once, so a worker starts in
  ~1 ms instead of the ~0.3 s a fresh interpreter takes to import sympy and math-verify. Every concurrent call gets
  its own worker: the pool grows to meet demand, up to MAX_WORKERS (beyond that a call waits for a worker, inside
  its bound). A hung call never holds up another one. Only a spawner thread talks to the template, so a slow
  template delays no caller past its bound either.
- Each call has one deadline, timeout_s after it starts: waiting for a worker, sending the request and waiting for
  the reply all count. On the deadline the worker is killed (SIGKILL through a pidfd; the template reaps it) and the
  call returns `default`: within timeout_s plus the time to wake and send the kill (measured on 2 cores, a quarter
  of the calls hung: 8 ms over with 8 threads calling, 20 ms with 32, 93 ms with 64; when busy workers outnumber
  the cores, the callers' threads wake late).
- Each worker runs under RLIMIT_AS = WORKER_MEMORY_BYTES: an allocation past it raises MemoryError there (graded
  `default`, and that worker is retired), so no call can take the machine's memory.
- Not counted in any bound: the template's one-time start (an interpreter, then the import of fn's module: ~0.3 s,
  capped by STARTUP_TIMEOUT_S), paid by the first call in a process that uses fn's module. If fn has an attribute
  `warm_calls` (argument tuples), the template then runs fn on each, so that every worker starts with warm caches
  (math-verify's parser: ~0.3 s over its first few answers in a fresh process, ~20 ms warm).

`fn` must be a module-level function (it is pickled by name), should be pure, and should return plain data: its
result is unpickled in the caller, outside the bound (a sympy expression would be evaluated there as it is rebuilt:
return a bool, not the expression). Any exception in it, a timeout, a dead worker or a MemoryError all give
`default`: for a verifier that means "incorrect", and the caller never sees an exception. Plain processes rather
than multiprocessing: they work from daemonic pool workers, never re-import the caller's __main__, and are safe
after fork.

isolate=False runs fn in-process under signal.setitimer instead (main thread only; elsewhere it still isolates):
no IPC, but no bound on C-level work or on memory. Use it only for code that cannot run long inside one bytecode.
"""
from __future__ import annotations

import atexit
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time

from r1lab.tasks.verify_worker import Timeout, recv_frame, send_frame

MAX_WORKERS = 32  # concurrent calls in worker processes; more wait for a worker, inside their bound
WORKER_MEMORY_BYTES = 512 << 20  # RLIMIT_AS of a worker (its address space at rest: ~70 MB)
STARTUP_TIMEOUT_S = 60.0  # the template's start: an interpreter importing fn's module (sympy: ~0.3 s)
RETRY_S = 0.05  # in-process path: after the deadline, the alarm fires again this often until the call has stopped


def call_bounded(fn, args: tuple, timeout_s: float, default, isolate: bool = True):
    """fn(*args), or `default` when it raises, runs past timeout_s seconds, exceeds its memory or its worker dies.

    call_bounded(pow, (2, 10), timeout_s=1.0, default=None) == 1024
    """
    if not isolate and _can_alarm():
        return _call_with_alarm(fn, args, timeout_s, default)
    return _pool().call(fn, args, timeout_s, default)


# --- in-process (isolate=False) ----------------------------------------------------------------------------------

def _can_alarm() -> bool:
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
            and signal.getsignal(signal.SIGALRM) is not None)  # None: a handler installed from C, not restorable


def _raise_timeout(signum, frame):
    raise Timeout


def _call_with_alarm(fn, args, timeout_s, default):
    old = signal.signal(signal.SIGALRM, _raise_timeout)
    try:
        # subtle: the interval re-raises every RETRY_S after the deadline. An exception raised inside a gc callback
        # or a __del__ is printed and dropped ("Exception ignored in ..."), and the call would then run on to its
        # end (seen in CI: 3.2 s against a 1 s bound, the first Timeout lost in hypothesis's gc callback).
        signal.setitimer(signal.ITIMER_REAL, timeout_s, RETRY_S)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Timeout:  # subtle: may also fire just after fn returned, before the timer was cleared: still default
        return default
    except Exception:
        return default
    finally:
        signal.signal(signal.SIGALRM, old)


# --- the parent's side -------------------------------------------------------------------------------------------

def _peak_rss_kb(pid: int) -> int:
    """VmHWM of a live process from /proc (0 when unreadable): a worker's peak, read before it is killed."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), 0)
    except (OSError, ValueError):
        return 0


class _Worker:
    def __init__(self, pid: int, sock: socket.socket):
        self.pid, self.sock = pid, sock
        try:  # subtle: a pidfd cannot hit a recycled pid; the worker is alive now, waiting for its first request
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def call(self, request: bytes, deadline: float) -> tuple:
        send_frame(self.sock, request, deadline)
        return pickle.loads(recv_frame(self.sock, deadline))

    def kill(self) -> int:
        """SIGKILL (no wait: the template reaps it); returns its peak RSS in kB."""
        peak = _peak_rss_kb(self.pid)
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass  # already gone
        self.close()
        return peak

    def close(self) -> None:
        self.sock.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class _Template:
    """The fork server's handle. Only the pool's spawner thread talks to it, so a slow answer delays no caller."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # import r1lab as we do
        code = f"from r1lab.tasks.verify_worker import template_main; template_main({theirs.fileno()})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(theirs.fileno(),), env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours

    def _ask(self, message: bytes, fds: list[int]):
        self.sock.settimeout(STARTUP_TIMEOUT_S)
        if fds:
            socket.send_fds(self.sock, [message], fds)
        else:
            self.sock.sendall(message)
        reply = self.sock.recv(1 << 16)
        if not reply:
            raise EOFError("the verifier template exited")
        status, value = pickle.loads(reply)
        if status != "ok":
            raise RuntimeError(value)
        return value

    def load(self, fn) -> None:
        self._ask(b"L" + pickle.dumps(fn), [])

    def fork(self) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            return _Worker(self._ask(b"F%d" % WORKER_MEMORY_BYTES, [theirs.fileno()]), ours)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()

    def close(self) -> None:
        self.sock.close()  # it exits on EOF
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Pool:
    """Idle workers, and a spawner thread that has the template fork more while callers wait for one."""

    def __init__(self):
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.alive = 0  # workers forked and not yet killed: idle + busy
        self.waiting = 0  # callers waiting for a worker
        self.loaded: set = set()  # functions the template has imported: their calls never wait for a start
        self.pending: set = set()  # functions whose first call waits for the template to import them
        self.template: _Template | None = None
        self.spawner: threading.Thread | None = None
        self.closed = False
        self.stats = {"forked": 0, "killed": 0, "retired": 0, "peak_worker_rss_kb": 0}

    def call(self, fn, args, timeout_s: float, default):
        request = pickle.dumps((fn, args))  # outside the try: an unpicklable fn is the caller's bug, so it raises
        if fn not in self.loaded and not self._first_use(fn):
            return default
        deadline = time.monotonic() + timeout_s
        worker = self._take(deadline)
        if worker is None:
            return default
        try:
            status, value, healthy, peak_kb = worker.call(request, deadline)
        except (Timeout, OSError, EOFError, pickle.PickleError, ValueError):  # hung, dead or out of step
            self._discard(worker, "killed")
            return default
        with self.cond:
            self.stats["peak_worker_rss_kb"] = max(self.stats["peak_worker_rss_kb"], peak_kb)
        if healthy:
            self._release(worker)
        else:
            self._discard(worker, "retired")
        return value if status == "ok" else default

    def _first_use(self, fn) -> bool:
        """Wait, outside any bound, for the template to import fn's module (its start, the first time)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with self.cond:
            self.pending.add(fn)
            self._wake()
            while fn in self.pending and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            return fn in self.loaded

    def _take(self, deadline: float) -> _Worker | None:
        """An idle worker, waiting for one (the spawner forks it) until the deadline."""
        with self.cond:
            self.waiting += 1
            try:
                while not self.idle:
                    self._wake()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.cond.wait(left)
                return self.idle.pop()
            finally:
                self.waiting -= 1

    def _wake(self) -> None:  # under self.cond
        if self.spawner is None:
            self.spawner = threading.Thread(target=self._spawn, name="verify-spawner", daemon=True)
            self.spawner.start()
        self.cond.notify_all()

    def _spawn(self) -> None:
        """The spawner thread: (re)start the template, import what first calls wait for, fork while callers wait."""
        while True:
            with self.cond:
                while not self.closed and not self.pending and not (self.waiting > len(self.idle)
                                                                   and self.alive < MAX_WORKERS):
                    self.cond.wait()
                if self.closed:
                    return
                pending, grow = set(self.pending), self.waiting > len(self.idle) and self.alive < MAX_WORKERS
            try:
                if self.template is None:
                    self.template = _Template()
                    pending |= self.loaded  # a new template: everything again
                for fn in pending:
                    self.template.load(fn)
                worker = self.template.fork() if grow else None
            except (Timeout, OSError, EOFError, RuntimeError, pickle.PickleError, ValueError):
                self._drop_template()
                with self.cond:
                    self.pending -= pending  # their first calls fail; a later demand tries a fresh template
                    self.cond.notify_all()
                time.sleep(RETRY_S)
                continue
            with self.cond:
                self.loaded |= pending
                self.pending -= pending
                if worker is not None:
                    self.idle.append(worker)
                    self.alive += 1
                    self.stats["forked"] += 1
                self.cond.notify_all()

    def _release(self, worker: _Worker) -> None:
        with self.cond:
            if not self.closed:
                self.idle.append(worker)
                self.cond.notify_all()
                return
        self._discard(worker, "killed")

    def _discard(self, worker: _Worker, why: str) -> None:
        peak = worker.kill()
        with self.cond:
            self.alive -= 1
            self.stats[why] += 1
            self.stats["peak_worker_rss_kb"] = max(self.stats["peak_worker_rss_kb"], peak)
            self.cond.notify_all()

    def _drop_template(self) -> None:
        template, self.template = self.template, None
        if template is not None:
            template.sock.close()
            template.proc.kill()
            template.proc.wait()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            idle, self.idle = self.idle, []
            self.alive -= len(idle)
            self.cond.notify_all()
        for worker in idle:
            worker.kill()
        if self.spawner is not None:
            self.spawner.join(timeout=STARTUP_TIMEOUT_S)
        if self.template is not None:
            self.template.close()
            self.template = None


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _Pool()
        return _POOL


def stats() -> dict:
    """Counters of this process's pool: workers forked, killed (on timeout, or dead), retired after a MemoryError;
    the peak RSS (kB) seen of any worker, and of the template now."""
    pool = _POOL
    if pool is None:
        return {"forked": 0, "killed": 0, "retired": 0, "peak_worker_rss_kb": 0, "template_rss_kb": 0}
    with pool.cond:
        out = dict(pool.stats)
        idle = [w.pid for w in pool.idle]
        template = pool.template
    out["peak_worker_rss_kb"] = max([out["peak_worker_rss_kb"]] + [_peak_rss_kb(pid) for pid in idle])
    out["template_rss_kb"] = _peak_rss_kb(template.proc.pid) if template is not None else 0
    return out


def shutdown() -> None:
    """Stop the idle workers and the template (they also exit on their own when this process ends); the next call
    starts afresh."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.close()


def _forget_pool_after_fork() -> None:
    # subtle: a forked child shares the parent's sockets; it must start its own template (and close its copies of
    # the parent's sockets, so that the parent's workers still see EOF when the parent goes), and a lock held by
    # another thread at fork time would never be released in the child.
    global _POOL, _POOL_LOCK
    if _POOL is not None:
        for worker in _POOL.idle:
            worker.close()
        if _POOL.template is not None:
            _POOL.template.sock.close()
    _POOL, _POOL_LOCK = None, threading.Lock()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)
