"""attok_monai.handlers."""
