"""Shared plugins: the mechanisms that more than one named method is built from."""
