"""One log format for every fedmi process, and the run folder's log file.

Libraries configure logging at import: Opacus calls ``logging.basicConfig`` with its own
``MM/DD/YYYY HH:MM:SS:LEVEL:`` format, Flower installs a coloured console handler on its
``flwr`` logger (which also propagates to the root, so its lines were printed twice), and
Flower's ``run_simulation`` prints a multi-line "DEPRECATED FEATURE" banner on every run.
:func:`configure_logging` replaces all of that with one handler in one format;
:func:`run_log` adds ``RUN_DIR/fedmi.log``.
"""

from __future__ import annotations

import logging
from pathlib import Path

#: every fedmi log line: ISO date and time, level, logger, message
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: the log file in a run folder
RUN_LOG = "fedmi.log"


def formatter() -> logging.Formatter:
    return logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT)


class _NoDeprecationBanner(logging.Filter):
    """Drops Flower's "DEPRECATED FEATURE" banner (fedmi runs its simulations through
    ``run_simulation`` on purpose: see simulations/federated.py)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith("DEPRECATED FEATURE")


def configure_logging(level: int | None = None) -> None:
    """Root logging to stderr in :data:`LOG_FORMAT`, replacing handlers a library installed.

    Flower's console handler is removed (its records reach the root handler instead) and
    its deprecation banner filtered out. ``level``: the root level (unchanged if ``None``).
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if not isinstance(h, logging.FileHandler):
            root.removeHandler(h)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter())
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level)
    flwr = logging.getLogger("flwr")
    for h in list(flwr.handlers):
        if type(h).__name__ == "ConsoleHandler" or type(h) is logging.StreamHandler:
            flwr.removeHandler(h)
    flwr.propagate = True
    if not any(isinstance(f, _NoDeprecationBanner) for f in flwr.filters):
        flwr.addFilter(_NoDeprecationBanner())


class _ConsoleLevel(logging.Filter):
    """What a console handler showed before the root level was lowered for the run log.

    A record passes when its logger, or the nearest ancestor below the root with a level of
    its own, allows it (``fedmi`` at INFO: the round lines), else when it reaches the root's
    former level.
    """

    def __init__(self, former: int) -> None:
        super().__init__()
        self.former = former

    def filter(self, record: logging.LogRecord) -> bool:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None and logger is not logging.getLogger():
            if logger.level != logging.NOTSET:
                return record.levelno >= logger.level
            logger = logger.parent  # type: ignore[assignment]
        return record.levelno >= self.former


def run_log(out_dir: Path, level: int = logging.INFO) -> logging.Handler | None:
    """Append every log line of this process at ``level`` or above to ``out_dir/fedmi.log``.

    The console keeps its verbosity (its handlers get the root's former level). Returns the
    new handler, or ``None`` when this process already logs there (the runner, then its
    ServerApp in the same process); pass it to :func:`close_run_log` when the run ends.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = (out_dir / RUN_LOG).resolve()
    root = logging.getLogger()
    for h in root.handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path:
            return None
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(formatter())
    handler.setLevel(level)
    if root.getEffectiveLevel() > level:
        former = root.getEffectiveLevel()
        for h in root.handlers:
            if h.level == logging.NOTSET and not any(
                isinstance(f, _ConsoleLevel) for f in h.filters
            ):
                h.addFilter(_ConsoleLevel(former))
        root.setLevel(level)
    root.addHandler(handler)
    return handler


def close_run_log(handler: logging.Handler | None) -> None:
    """Stop writing to the run log ``handler`` (from :func:`run_log`; ``None``: nothing)."""
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()
