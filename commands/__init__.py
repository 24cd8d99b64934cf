"""poolkit's built-in ``flask`` commands, one module per command.

Each is registered on the ``flask`` CLI through the ``flask.commands`` entry-point group
(see pyproject.toml), so ``flask initdb``, ``flask pool-stress`` and ``flask pool-status``
work in any app that uses poolkit. An app's own ``commands/*.py`` are found by
:mod:`poolkit.discovery` at ``init_app``.
"""
