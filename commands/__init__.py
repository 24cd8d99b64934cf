"""poolkit's built-in ``flask`` commands, one thin module per command.

This folder installs as ``poolkit.commands``. The ``flask.commands`` entry points (see
pyproject.toml) name the stand-ins in :mod:`poolkit.commands._cli`, so ``flask initdb``,
``flask pool-stress``, ``flask pool-status`` and ``flask dbshell`` work in any app that uses
poolkit, each module imported only when its command is used, and an app command of the same
name wins. An app's own ``commands/*.py`` are found by :mod:`poolkit.discovery`.
"""
