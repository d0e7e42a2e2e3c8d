"""Work done after Slack has its answer: one thread per web process, one job per key.

A view submission is answered as soon as the change is stored (Slack closes the modal at
once); re-rendering the card and the `chat.update` that shows it run here afterwards. Jobs
are keyed (a card's escalation id): a key already waiting is not queued twice, because
the job reads the card's state when it runs, not when it was queued. One thread keeps the
updates of a message in order and, under a burst of clicks, takes a share of the CPU
instead of competing with every request thread.

Nothing here is durable: a process killed with updates waiting leaves those cards as they
were, and their buttons answer "already handled" with the current state.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class AfterResponse:
    def __init__(self, name: str = "after-response") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._pending: OrderedDict[Hashable, tuple[contextvars.Context, Callable[[], None]]] = \
            OrderedDict()
        self._running = 0
        self._thread: threading.Thread | None = None
        self.done = 0  # jobs finished, failed ones included (for tests and metrics)

    def submit(self, key: Hashable, job: Callable[[], None]) -> None:
        """Run `job` soon, with the caller's context (its request id in the logs)."""
        with self._cond:
            if key not in self._pending:
                self._pending[key] = (contextvars.copy_context(), job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name,
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._pending) + self._running

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued job has run; False when `timeout` came first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                _, (context, job) = self._pending.popitem(last=False)
                self._running += 1
            try:
                context.run(job)
            except Exception:  # a failed job must not stop the ones after it
                log.exception("background job failed")
            finally:
                with self._cond:
                    self._running -= 1
                    self.done += 1
                    self._cond.notify_all()
