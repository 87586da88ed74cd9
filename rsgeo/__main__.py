"""``python -m rsgeo`` runs the CLI."""

from rsgeo.cli.app import run

run()
