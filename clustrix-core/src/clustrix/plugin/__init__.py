"""The plugin contract: hook specifications, the manager, the value types, transports and dry runs."""
