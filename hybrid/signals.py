"""A run stopped by a signal says so and exits as shells and schedulers expect: 128 + the signal's number.

SLURM, Docker and systemd stop a job with SIGTERM; Ctrl-C sends SIGINT. Lightning turns the first into a
SystemExit with status 0 and the second into status 1, both losing which signal it was. Inside
`stop_on_signals()` either signal is noted, the run stops (Lightning's own handler is kept: it stops at the
next step boundary), and the exception leaving the block becomes `Stopped`, which names the signal and carries
the exit status (130 for SIGINT, 143 for SIGTERM).
"""
import contextlib
import signal


class Stopped(Exception):
    """The run was stopped by a signal."""

    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {self.name} (exit status {self.exit_code})")


@contextlib.contextmanager
def stop_on_signals(signums=(signal.SIGINT, signal.SIGTERM)):
    """Note SIGINT/SIGTERM; any exception leaving the block after one arrived is re-raised as Stopped."""
    received = []

    def handler(signum, frame):
        received.append(signum)
        # called alone (no Lightning handler composed around it, e.g. between fit and validate): stop now;
        # called by Lightning's handler: Lightning stops at the next step boundary
        if signal.getsignal(signum) is handler:
            raise KeyboardInterrupt

    try:
        previous = {s: signal.signal(s, handler) for s in signums}
    except ValueError:  # not the main thread: signals cannot be handled here, run without
        yield
        return
    try:
        yield
    except BaseException as e:
        if received:
            raise Stopped(received[0]) from e
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
