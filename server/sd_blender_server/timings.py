"""Where a job's time goes, measured by the server itself: a request's clock starts as the request
reaches the app and stops when its answer's last byte is handed to the HTTP server, the job's clock
adds when it was queued, ran, generated and encoded and how long its images took to send, and the
job's status reports the parts in milliseconds (`timings`). No torch here."""
from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class RequestClock:
    """One HTTP request: when it reached the app, when its JSON body was parsed, the seconds spent
    decoding its input images (inside validation), when its answer was sent, and the job whose image
    it sends, if it does (that job's clock adds the request's time to its downloads)."""

    received: float = field(default_factory=time.perf_counter)
    parsed: float | None = None
    decoding: float = 0.0
    answered: float | None = None
    sends_image_of: JobClock | None = None
    # An HTTP request's answer is still to be sent (start_request); on_answer is then called once it is.
    answer_pending: bool = False
    on_answer: Callable[[], None] | None = None

    def answer_sent(self) -> None:
        if not self.answer_pending:
            return
        self.answered, self.answer_pending = time.perf_counter(), False
        if self.sends_image_of is not None:
            self.sends_image_of.downloads += self.answered - self.received
        if self.on_answer is not None:
            self.on_answer()

    def ages(self) -> tuple[float, float | None, float]:
        """Seconds since it was received and parsed, and the decoding time: what another process
        (a Ray Serve replica, whose perf_counter is its own) rebuilds the clock from (aged)."""
        now = time.perf_counter()
        return now - self.received, None if self.parsed is None else now - self.parsed, self.decoding

    @classmethod
    def aged(cls, ages: tuple[float, float | None, float]) -> RequestClock:
        """The clock of a request received `ages` ago (RequestClock.ages, read in another process)."""
        now = time.perf_counter()
        received, parsed, decoding = ages
        return cls(now - received, None if parsed is None else now - parsed, decoding)


_current_request: contextvars.ContextVar[RequestClock | None] = contextvars.ContextVar("request_clock", default=None)


def start_request() -> RequestClock:
    """A clock for the HTTP request this context (the route's task, and the threads it runs) handles,
    its answer pending until answer_sent()."""
    clock = RequestClock(answer_pending=True)
    _current_request.set(clock)
    return clock


def current_request() -> RequestClock:
    """The clock of the request being handled; a job submitted outside HTTP starts its own now."""
    return _current_request.get() or RequestClock()


def timed_decoding(decode: Callable[P, T]) -> Callable[P, T]:
    """`decode` (with its signature, which pydantic reads), its time added to the current request's
    decoding."""

    @functools.wraps(decode)
    def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        start = time.perf_counter()
        try:
            return decode(*args, **kwargs)
        finally:
            clock = _current_request.get()
            if clock is not None:
                clock.decoding += time.perf_counter() - start

    return timed


@dataclass
class JobClock:
    """A job's moments (time.perf_counter) past its request's, its PNG encoding time, and the time
    its image requests took (from reaching the app to the answer's last byte)."""

    request: RequestClock
    queued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    generated: float | None = None
    encoding: float | None = None
    finished: float | None = None
    downloads: float = 0.0

    def milliseconds(self) -> dict:
        """The parts of the job's time so far, in milliseconds (null: not reached): reading and
        parsing the body, validating it (schema, catalog, parameters; decoding apart), decoding its
        images, waiting in the queue, generating (the engine: the model and what it does around it),
        encoding the PNGs with their metadata, and the total from the request's arrival to the end;
        then, beside them, the HTTP work measured here: answering the submission once the job was
        queued (`answer`), and sending its images (`download`, the sum of its image requests)."""
        request = self.request
        parsed = request.parsed if request.parsed is not None else request.received
        return {
            "parsing": _ms(request.received, parsed),
            "validation": _ms(parsed, self.queued, minus=request.decoding),
            "decoding": round(request.decoding * 1000, 3),
            "queued": _ms(self.queued, self.started),
            "generation": _ms(self.started, self.generated),
            "encoding": None if self.encoding is None else round(self.encoding * 1000, 3),
            "total": _ms(request.received, self.finished),
            "answer": _ms(self.queued, request.answered),
            "download": round(self.downloads * 1000, 3) if self.downloads else None,
        }


def _ms(start: float | None, end: float | None, minus: float = 0.0) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start - minus) * 1000, 3)
