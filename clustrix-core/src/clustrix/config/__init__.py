"""Configuration: settings and profiles, the declared keys, and resource requests."""
