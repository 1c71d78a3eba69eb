"""Where orders go: the simulated fill engine and Bybit execution share one interface."""
