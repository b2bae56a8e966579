"""Bridges between cltune and other continual-learning toolkits (Avalanche)."""
