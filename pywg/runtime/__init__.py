"""Adapters that connect the sans-I/O core to the operating system."""
