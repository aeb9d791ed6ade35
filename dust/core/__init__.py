"""Core: settings, errors and logging — the layer everything else stands on."""
