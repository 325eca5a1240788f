"""attok_monai.data."""
