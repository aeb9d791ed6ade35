"""Repository functions: every query the engine runs, one module per resource."""
