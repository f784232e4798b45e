"""Execution strategies: the base class, the stop event, and the reference strategies."""
