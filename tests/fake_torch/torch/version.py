# A stand-in for torch (tests/fake_torch): the version smoke's probe reads from this file.
__all__ = ["__version__"]
__version__ = "2.5.1+fake"
