"""Files shipped inside the wheel: the tiny demo model (see scripts/make_tiny_model.py)."""
