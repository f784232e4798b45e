"""Benchmarks of the store, the execution strategies and the conformance kit; ``python -m bench`` runs all."""
