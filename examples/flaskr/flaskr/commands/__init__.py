"""flaskr's own flask commands (one per file, found by poolkit)."""
