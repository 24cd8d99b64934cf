"""Test tooling, not runtime code: the pytest plugin (:mod:`.plugin`), throwaway databases
(:mod:`.databases`, usable without pytest), private and stock servers, the fault proxy."""

from __future__ import annotations

from .databases import Databases as Databases
from .databases import admin_connect as admin_connect
from .databases import full_url as full_url
