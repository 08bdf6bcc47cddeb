"""The one error type for bad datasets: the CLI turns it into a message instead of a traceback."""
from __future__ import annotations


class DatasetError(Exception):
    """A dataset file is missing, malformed or inconsistent; the message names the file and what was expected."""
