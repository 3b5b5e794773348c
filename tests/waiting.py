"""Waiting on a state, never on a wall-clock bound: the timeout only turns a hang into a failure."""
import time


def wait_for(condition, what, timeout=120):
    """Returns once condition() is true; fails saying `what` was awaited if it never becomes true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
