"""One log format, Flower's deprecation banner dropped, the run folder's log file."""

from __future__ import annotations

import logging
import re

import pytest

from fedmi.shared.logs import RUN_LOG, close_run_log, configure_logging, run_log

LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} (INFO|WARNING) [\w.]+: ")


@pytest.fixture
def clean_root():
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    flwr = logging.getLogger("flwr")
    saved_flwr, saved_filters = list(flwr.handlers), list(flwr.filters)
    yield root
    root.handlers[:] = saved
    root.setLevel(level)
    flwr.handlers[:] = saved_flwr
    flwr.filters[:] = saved_filters


def test_one_format_in_the_run_log_and_no_banner(clean_root, tmp_path):
    import opacus.utils.module_utils  # noqa: F401 - its basicConfig at import, replaced below
    from flwr.supercore.logger import warn_deprecated_feature

    configure_logging(logging.WARNING)
    handler = run_log(tmp_path)
    try:
        logging.getLogger("fedmi.server.x").info("round 1/2 done")
        logging.getLogger("flwr").warning("a Flower warning")
        warn_deprecated_feature("The `run_simulation` function is deprecated")
    finally:
        close_run_log(handler)
    lines = (tmp_path / RUN_LOG).read_text().splitlines()
    assert len(lines) == 2, lines
    assert all(LINE.match(line) for line in lines), lines
    assert "DEPRECATED" not in (tmp_path / RUN_LOG).read_text()
    # the console kept its verbosity (WARNING, and INFO for loggers set to INFO, like
    # fedmi's round lines) while the file takes INFO from every logger
    (stream,) = [h for h in clean_root.handlers if type(h) is logging.StreamHandler]
    info = logging.LogRecord("fedmitest.x", logging.INFO, __file__, 1, "m", None, None)
    assert not stream.filter(info)
    logging.getLogger("fedmitest").setLevel(logging.INFO)
    try:
        assert stream.filter(info)
    finally:
        logging.getLogger("fedmitest").setLevel(logging.NOTSET)


def test_a_second_run_log_on_the_same_folder_is_not_doubled(clean_root, tmp_path):
    first = run_log(tmp_path)
    assert run_log(tmp_path) is None
    logging.getLogger("fedmi").warning("once")
    close_run_log(first)
    assert (tmp_path / RUN_LOG).read_text().count("once") == 1
