"""The security suite: a rogue server, TLS modes, secrets in messages and children."""
