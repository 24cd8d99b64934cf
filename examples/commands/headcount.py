"""An app's own command, found by poolkit like Django's management/commands: `flask headcount`."""

from __future__ import annotations

import click

from poolkit import db


@click.command()
@click.option("--min-salary", type=float, default=0.0, help="Count only salaries at or above.")
def headcount(min_salary: float) -> None:
    """Print how many employees the database holds."""
    count = db.scalar("SELECT COUNT(*) FROM employee WHERE COALESCE(salary, 0) >= %s",
                      (min_salary,))
    click.echo(f"{count} employees")
