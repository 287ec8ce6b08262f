"""The local platform: real processes and containers on this machine's loopback."""
