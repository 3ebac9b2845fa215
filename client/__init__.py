"""Everything that runs inside a hospital: ingest, local data, training, evaluation, egress checks."""
