"""Event-driven ML trading bot for Bybit."""

__version__ = "0.1.0"
