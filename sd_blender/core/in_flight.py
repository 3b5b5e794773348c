"""Jobs kept in flight together, up to a number, and finished in the order they were started: how
`generate --frames` keeps a server that runs several jobs at once (GET /v1/limits' parallel_jobs)
busy with the frames that do not depend on each other."""
from collections import deque


class JobsInFlight:
    """Started jobs (each with cancel() and wait(), as a core.job.GenerationJob) and what each
    makes; finish(job, what) follows a job to its end and raises when it did not end well."""

    def __init__(self, most, finish):
        self._most = most
        self._finish = finish
        self._jobs = deque()

    def make_room(self):
        """Finish the oldest jobs until one more may start."""
        while len(self._jobs) >= self._most:
            self._finish(*self._jobs.popleft())

    def add(self, job, what):
        self._jobs.append((job, what))

    def finish_all(self):
        while self._jobs:
            self._finish(*self._jobs.popleft())

    def cancel_all(self):
        """Cancel every job still in flight, then wait until each has ended, its cancel sent to the
        server."""
        for job, _ in self._jobs:
            job.cancel()
        while self._jobs:
            self._jobs.popleft()[0].wait()
