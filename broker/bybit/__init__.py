"""Bybit v5 execution on pybit: REST (http.py), private stream (stream.py), one account
(account.py) and its per-symbol legs, the engine's brokers (broker.py)."""

from broker.bybit.account import BybitAccount
from broker.bybit.broker import BybitBroker
from broker.bybit.http import BybitHttp
from broker.bybit.stream import PrivateStream, private_url

__all__ = ["BybitAccount", "BybitBroker", "BybitHttp", "PrivateStream", "private_url"]
