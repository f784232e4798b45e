"""pytest plugin entry point of the conformance kit (registered through ``pytest11``)."""
