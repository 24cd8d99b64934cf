"""``flask init-db``: the tutorial's command, found by poolkit in the app's commands/ folder."""

from __future__ import annotations

from pathlib import Path

import click

from poolkit import db, executefile

SCHEMA = Path(__file__).resolve().parent.parent / "sql" / "10_schema.sql"


@click.command("init-db")
def init_db() -> None:
    """Clear the existing data and create new tables."""
    executefile(db, SCHEMA)
    click.echo("Initialized the database.")
