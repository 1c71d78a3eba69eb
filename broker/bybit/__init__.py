"""Bybit v5 execution on pybit: REST (http.py), private stream (stream.py), broker (broker.py)."""

from broker.bybit.broker import BybitBroker
from broker.bybit.http import BybitHttp
from broker.bybit.stream import PrivateStream, private_url

__all__ = ["BybitBroker", "BybitHttp", "PrivateStream", "private_url"]
