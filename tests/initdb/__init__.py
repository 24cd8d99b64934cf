"""The differential tests of flask initdb against the mariadb client."""
