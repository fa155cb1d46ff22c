"""Built-in profiles, shipped in the wheel as ``bootstrap.profiles`` (see pyproject.toml)."""
