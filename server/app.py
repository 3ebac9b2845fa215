"""The fedmi ServerApp: a thin Flower entry point over :mod:`fedmi.server.federation.run`.

It parses the run config once (:class:`~fedmi.shared.run_config.RunConfig`), chooses the
run folder and hands a prompt-polling grid to :func:`~fedmi.server.federation.run.run_federation`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmi.server.federation.polling import PromptGrid
from fedmi.server.federation.rounds import progress_logging
from fedmi.server.federation.run import run_federation
from fedmi.shared.logs import close_run_log, run_log
from fedmi.shared.run_config import RunConfig
from fedmi.shared.transport import shorten_pull_backoff

log = logging.getLogger(__name__)


def build_server_app(overrides: Mapping[str, object] | None = None) -> ServerApp:
    """Build the ServerApp; ``overrides`` replace run-config keys (used by the one-machine runner)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        shorten_pull_backoff()  # a site's reply is read 50 ms after it is not there yet, not 1 s
        values = {**dict(context.run_config), **dict(overrides or {})}
        cfg = RunConfig.from_mapping(values)
        out_dir = cfg.output_dir(context.run_id)
        progress_logging()  # under `flwr run --stream`: show fedmi's progress lines
        log.info(
            "fedmi run %s: task %s, method %s, output in the run folder",
            context.run_id,
            cfg.task,
            cfg.method,
        )
        handler = run_log(out_dir)  # RUN_DIR/fedmi.log
        try:
            # Flower's grids poll for replies every 0.1 s (simulation) or 3 s (SuperLink)
            run_federation(PromptGrid(grid), cfg, out_dir)
        finally:
            close_run_log(handler)

    return app


app = build_server_app()
