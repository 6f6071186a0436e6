"""Dynamic batching: requests that arrive close together share one ``generate`` call.

One worker thread owns the model (the event loop never runs it). It takes the first waiting request, waits up to
``wait_ms`` for more (up to the engine's ``max_batch_size``), lets the engine plan the batches (equal
settings, token budget) and runs them; answers and streamed pieces go back through
:class:`concurrent.futures.Future` objects and listeners. Requests queued while a batch runs are picked up
together by the next round.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from afnext.inference.engine import InferenceEngine, Prepared, Result
from afnext.inference.generation import TextListener

__all__ = ["DynamicBatcher"]


@dataclass
class _Job:
    prepared: Prepared
    listener: TextListener | None
    future: Future = field(default_factory=Future)


class DynamicBatcher:
    """Runs prepared requests through the engine in batches, on one worker thread.

    Args:
        engine: The inference engine (its ``max_batch_size`` caps a batch).
        wait_ms: How long the first request of a round waits for others to join it.

    Attributes:
        stats: ``batches``, ``requests`` and ``largest_batch`` run so far.
    """

    def __init__(self, engine: InferenceEngine, *, wait_ms: float = 10.0) -> None:
        self.engine = engine
        self.wait = max(wait_ms, 0.0) / 1000.0
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.stats = {"batches": 0, "requests": 0, "largest_batch": 0}
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker thread."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="afnext-batcher", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        """Finish the round in progress and stop the worker."""
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join()
            self.thread = None

    def submit(self, prepared: Prepared, listener: TextListener | None = None) -> Future:
        """Queue a prepared request; the future gets its :class:`Result` (``listener``: its text pieces, from
        the worker thread)."""
        job = _Job(prepared, listener)
        self.jobs.put(job)
        return job.future

    def _loop(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            jobs, stopping = [first], False
            deadline = time.monotonic() + self.wait
            while len(jobs) < self.engine.max_batch_size:
                try:
                    job = self.jobs.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
            self._run(jobs)
            if stopping:
                return

    def _run(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        plan = self.engine.plan(
            [j.prepared.prompt_tokens for j in jobs], [j.prepared.settings for j in jobs]
        )
        for batch in plan:
            chosen = [jobs[i] for i in batch]
            try:
                results: list[Result] = self.engine.run(
                    [j.prepared for j in chosen], [j.listener for j in chosen]
                )
            except Exception as exc:  # handed to every waiting request, the worker lives on
                for job in chosen:
                    job.future.set_exception(exc)
                continue
            self.stats["batches"] += 1
            self.stats["requests"] += len(chosen)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(chosen))
            for job, result in zip(chosen, results):
                job.future.set_result(result)

    def info(self) -> dict[str, Any]:
        """The stats and the queue length."""
        return {**self.stats, "queued": self.jobs.qsize()}
