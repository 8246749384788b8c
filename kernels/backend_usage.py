"""Which backends of one op ran since a run started (run records list them), and one log line the first time
`auto` chooses a backend on a device type. One instance per op module (selective_scan, ssd, attention)."""
import logging


class BackendUsage:
    """`ran(name)` at each dispatch; `used()` the sorted names since `reset()`; `log_auto_choice` logs once per
    (choice, device type)."""

    def __init__(self, op: str, log: logging.Logger):
        self.op, self.log = op, log
        self._used: set[str] = set()
        self._logged: set[tuple[str, str]] = set()

    def ran(self, name: str) -> None:
        self._used.add(name)

    def used(self) -> list[str]:
        """The backends that have run since the last reset() (for run records)."""
        return sorted(self._used)

    def reset(self) -> None:
        """Forget the backends seen so far: a run calls this when it starts, so its record lists only its own."""
        self._used.clear()

    def log_auto_choice(self, choice: str, device_type: str) -> None:
        if (choice, device_type) not in self._logged:
            self._logged.add((choice, device_type))
            self.log.info("%s backend=auto chose %r on %s", self.op, choice, device_type)
