"""The child side of r1lab.tasks.verify_timeout: the template process (a fork server that imported the verifier's
module once) and the workers it forks, which run one call at a time under a memory limit, plus the length-prefixed
frames both sides speak over their stream sockets. verify_timeout.py's docstring gives the design.
"""
from __future__ import annotations

import os
import pickle
import resource
import signal
import socket
import time

HEADER = 8  # bytes of the little-endian frame length


class Timeout(BaseException):
    pass


# --- frames over a stream socket ---------------------------------------------------------------------------------

def send_frame(sock: socket.socket, payload: bytes, deadline: float | None) -> None:
    sock.settimeout(None if deadline is None else _left(deadline))
    sock.sendall(len(payload).to_bytes(HEADER, "little") + payload)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(None if deadline is None else _left(deadline))
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the socket")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, deadline: float | None) -> bytes:
    return _recv_exact(sock, int.from_bytes(_recv_exact(sock, HEADER, deadline), "little"), deadline)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Timeout
    return left


# --- the template and its workers (these run in the child processes) ----------------------------------------------

def template_main(fd: int) -> None:
    """The fork server: on b"L"+pickled fn import fn's module; on b"F<memory bytes>" with a socket attached, fork a
    worker serving that socket and answer its pid. Exits when the parent closes the control socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; we exit on EOF when it goes
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited workers: no zombies, no waitpid
    control = socket.socket(fileno=fd)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 16, 1)
        except OSError:
            return
        if not message:
            return
        reply = ("error", "bad request")
        if message[:1] == b"L":
            try:
                fn = pickle.loads(message[1:])
                for args in getattr(fn, "warm_calls", ()):  # caches every worker forked from now on starts with
                    try:
                        fn(*args)
                    except Exception:
                        pass
                reply = ("ok", None)
            except Exception as e:
                reply = ("error", f"{type(e).__name__}: {str(e)[:200]}")
        elif message[:1] == b"F" and fds:
            pid = os.fork()
            if pid == 0:
                try:
                    control.close()
                    worker_main(fds[0], int(message[1:]))
                finally:
                    os._exit(0)
            reply = ("ok", pid)
        for f in fds:
            os.close(f)
        control.send(pickle.dumps(reply))


def worker_main(fd: int, memory_bytes: int) -> None:
    """A worker's loop: read (fn, args), answer (status, value, healthy, peak RSS in kB); exit on EOF, or once
    unhealthy (after a MemoryError its heap is no longer trusted)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # fn may run subprocesses of its own
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    sock = socket.socket(fileno=fd)
    while True:
        try:
            request = recv_frame(sock, None)
        except (EOFError, OSError):
            return
        healthy = True
        try:
            fn, args = pickle.loads(request)
            reply = ("ok", fn(*args))
        except MemoryError:
            reply, healthy = ("error", "MemoryError"), False
        except Exception as e:
            reply = ("error", f"{type(e).__name__}: {str(e)[:200]}")
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            payload = pickle.dumps(reply + (healthy, peak_kb))
        except Exception as e:
            payload = pickle.dumps(("error", f"unpicklable result: {type(e).__name__}", healthy, peak_kb))
        send_frame(sock, payload, None)
        if not healthy:
            return
