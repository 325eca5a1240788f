"""attok_monai.engines."""
