"""Shared helpers for the zh-instruct-cookbook notebooks.

Import from the modules by name (`from helpers.train import train_model`); this file imports nothing
heavy so that `import helpers` stays instant.
"""

__all__: list[str] = []
__version__ = "0.1.0"
