"""crossdisc."""
