"""Test tooling, not runtime code: the pytest plugin (:mod:`.plugin`) and the fault proxy."""
