"""Pure logic: checks, profiles, plans and generated files. Never prints, never exits, never imports click/rich."""
