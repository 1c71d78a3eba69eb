"""Candle feeds: historical replay and live exchange streams."""
