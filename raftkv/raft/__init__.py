"""The sans-IO Raft core."""
