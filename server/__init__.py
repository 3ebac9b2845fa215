"""Everything that runs at the coordinator: ServerApp, strategy, validation, checkpoints, reports."""
