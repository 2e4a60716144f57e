"""Lightning callbacks of cam-bench."""
from callbacks.saliency_writer import SaliencyWriter, read_records

__all__ = ["SaliencyWriter", "read_records"]
