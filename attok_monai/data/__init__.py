"""Data: readers that turn public and hospital datasets into MONAI-style data lists, and transform chains.

A data list is ``list[dict]`` with at least ``image`` (file path or numpy uint8 array), ``label`` (class index or list
of indices) and ``id`` (unique, never a patient id). After the load transforms ``image`` is a channel-first float
tensor (C, H, W) in [0, 1]. This package knows no model.
"""
