"""cam-bench: an evaluation benchmark suite for Class Activation Map explanation methods."""

__version__ = "0.1.0"
