"""Building strategies from configuration (registry, ``build_component``) and the ``Trainer``."""
