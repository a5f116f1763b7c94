"""Command line: argument parsing (``main``), pure rich views (``views``), the local cluster
launcher command (``up``).  Talks to nodes through ``Client`` only; runs a node via ``Node``."""
