"""attok_monai.bundle."""
