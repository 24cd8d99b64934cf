"""``flask pool-stress``'s library half: strategies, load, report; never formats for a tty."""
