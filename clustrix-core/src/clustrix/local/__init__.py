"""The local backend: the machine's own cores."""
