"""``flask initdb``'s library half: find, split, apply and record .sql files; never prints."""
