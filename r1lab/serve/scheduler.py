"""The engine thread: one EngineBatch, driven by one background thread, fed by the asyncio server.

    scheduler = Scheduler(engine, max_jobs=64); scheduler.start(asyncio.get_running_loop())
    job = scheduler.submit([(prompt_ids, params, forced, seed), ...])   # one tuple per completion (n choices)
    async for batch in job.events(): ...        # [(choice index, [Event, ...]), ...] once per decoding step
    job.close()                                 # always: cancels what is still running and frees the slot

Threads: the asyncio event loop only puts commands ("add", "cancel") in a queue; the engine thread alone touches the
EngineBatch (it is single-threaded by design). Between two decoding steps it drains the queue, so new requests join
the running batch at the next step (continuous batching, the same code path as RL rollouts and evaluation). After
each step it hands every job its events with one loop.call_soon_threadsafe. When the batch is empty it sleeps on the
queue.

Failures: a request that breaks in the engine's per-row code (a forced-token hook, its sampling values, its stop
check: an "error" completion) or that add() refuses fails alone: its job gets an EngineFailure and its other
choices are cancelled; every other request goes on. Anything else that raises on this thread (step() itself, out of
memory) fails the jobs in flight and starts a fresh batch, so the server stays up.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import defaultdict

log = logging.getLogger("r1lab.serve")


class Busy(Exception):
    """All max_jobs slots are taken (the server answers 429)."""


class EngineFailure(Exception):
    """The job's request failed in the engine (alone, or with the whole batch); its completions are lost."""


class Job:
    """One HTTP request's completions in flight; the engine thread puts per-step event lists on `queue`."""

    def __init__(self, scheduler: Scheduler, specs: list[tuple]):
        self.scheduler, self.specs = scheduler, specs
        self.queue: asyncio.Queue = asyncio.Queue()
        self.open = len(specs)  # completions not finished yet
        self.rids: list[int] = []  # engine request ids; written by the engine thread only
        self.closed = False

    async def events(self):
        """Yields [(choice index, [Event, ...]), ...] until every completion has finished."""
        while self.open:
            yield self.take(await self.queue.get())

    def take(self, item) -> list:
        """Account for one item from `queue`: a step's events, or an EngineFailure (raised)."""
        if isinstance(item, Exception):
            raise item
        self.open -= sum(ev.completion is not None for _, evs in item for ev in evs)
        return item

    def close(self) -> None:
        """Idempotent. Cancels unfinished completions in the engine and frees the job's slot."""
        if self.closed:
            return
        self.closed = True
        self.scheduler.jobs -= 1
        if self.open:
            self.scheduler.inbox.put(("cancel", self))


class Scheduler:
    def __init__(self, engine, max_jobs: int = 64, threads: int | None = None):
        self.engine, self.max_jobs, self.threads = engine, max_jobs, threads
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.jobs = 0  # open jobs; event-loop thread only
        # counters for GET /health, written by the engine thread
        self.rows = self.cancelled = self.failed = self.steps = self.tokens = 0
        self._loop = self._thread = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="r1lab-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.inbox.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, specs: list[tuple]) -> Job:
        """specs: (prompt_ids, SamplingParams, forced hook or None, seed) per completion. Raises Busy."""
        if self.jobs >= self.max_jobs:
            raise Busy(f"the server is handling its maximum of {self.max_jobs} concurrent requests; retry later")
        self.jobs += 1
        job = Job(self, specs)
        self.inbox.put(("add", job))
        return job

    # -- the engine thread ----------------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        from r1lab.engine import EngineBatch

        if self.threads:
            torch.set_num_threads(self.threads)  # subtle: per thread for OpenMP, so set it here too
        batch = EngineBatch(self.engine)
        owner: dict[int, tuple[Job, int]] = {}  # engine request id -> (job, choice index)
        while True:
            try:
                if not self._drain(batch, owner):
                    return
                if not batch:
                    if batch.rows:
                        batch.step()  # nothing left to decode: this only frees the cancelled rows' cache
                    self.rows = 0
                    continue
                events = batch.step()
                self.steps, self.tokens, self.rows = self.steps + 1, self.tokens + len(events), len(batch)
                self._deliver(events, batch, owner)
            except Exception as e:  # a bug or out of memory: fail the jobs in flight, keep serving
                log.exception("engine step failed; failing %d requests", len(owner))
                for job in {job for job, _ in owner.values()}:
                    self._fail(job, f"engine error: {e!r}")
                batch, owner = EngineBatch(self.engine), {}

    def _deliver(self, events: list, batch, owner: dict) -> None:
        """Hand each job its events of one step; a job with an "error" completion fails alone."""
        out: dict[Job, dict[int, list]] = defaultdict(lambda: defaultdict(list))
        errors: dict[Job, str] = {}
        for ev in events:
            job, index = owner.pop(ev.request_id) if ev.completion is not None else owner[ev.request_id]
            if ev.completion is not None and ev.completion.finish_reason == "error":
                errors[job] = ev.completion.error
            out[job][index].append(ev)
        for job, error in errors.items():
            del out[job]
            for rid in job.rids:  # the request fails as a whole: its other choices stop
                if owner.pop(rid, None) is not None:
                    batch.cancel(rid)
            self._fail(job, f"this request failed in the engine: {error}")
        for job, grouped in out.items():
            self._loop.call_soon_threadsafe(job.queue.put_nowait, list(grouped.items()))

    def _fail(self, job: Job, message: str) -> None:
        self.failed += 1
        self._loop.call_soon_threadsafe(job.queue.put_nowait, EngineFailure(message))

    def _drain(self, batch, owner) -> bool:
        """Apply queued commands; block for the first one only when there is nothing to step. False: stop."""
        block = not batch
        while True:
            try:
                cmd = self.inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if cmd is None:
                return False
            kind, job = cmd
            if kind == "add":
                try:
                    for index, (prompt_ids, params, forced, seed) in enumerate(job.specs):
                        rid = batch.add(prompt_ids, params, forced, seed)
                        job.rids.append(rid)
                        owner[rid] = (job, index)
                except Exception as e:  # the server validates first; this is a second line of defence
                    self._fail(job, f"the engine refused this request: {e}")
                    kind = "cancel"
            if kind == "cancel":
                for rid in job.rids:
                    if owner.pop(rid, None) is not None and batch.cancel(rid):
                        self.cancelled += 1
