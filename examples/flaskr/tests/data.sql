-- Test data, loaded by conftest.py with poolkit.executescript after `flask init-db`.
-- Passwords: 'test' and 'other' (werkzeug hashes, 1,000 rounds: fast for tests).
INSERT INTO user (username, password) VALUES
  ('test', 'pbkdf2:sha256:1000$1ir0mbtDvtlPfdbj$15d64d1bdeb70f8809878ece33075fbee626b05fcede94f241e279f3046b26f0'),
  ('other', 'pbkdf2:sha256:1000$Jd6dWyuRejr7jJ8G$04f255eebaa83656b6e7cbeaa801f7f74855c9623400099e31663c349fe3e781');

INSERT INTO post (title, body, author_id, created) VALUES
  ('test title', 'test\nbody', 1, '2018-01-01 00:00:00');
