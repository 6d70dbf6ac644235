"""Brokers: how a gateway hears about changes (Redis pub/sub, or the SQLite change feed)."""
