"""Shared helpers for the zh-instruct-cookbook notebooks.

Import from the modules by name (`from helpers.train import train_model`); this file imports nothing
heavy so that `import helpers` stays instant. It only hides a few known, harmless library messages
(listed in helpers/console.py, matched by category and text), before the libraries that emit them load.
"""

from .console import silence_known_noise as _silence_known_noise

__all__: list[str] = []
__version__ = "0.1.0"

_silence_known_noise()
