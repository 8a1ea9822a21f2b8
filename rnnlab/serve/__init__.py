"""The predictive-keyboard server: ``create_app`` builds the FastAPI app for one checkpoint.

Importing this package does not import FastAPI; ``rnnlab.serve.app`` does.
"""


def create_app(*args, **kwargs):
    """See ``rnnlab.serve.app.create_app``."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app"]
