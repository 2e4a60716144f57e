"""Lightning callbacks of cam-bench."""
from callbacks.per_sample_writer import PerSampleWriter, records_to_frame
from callbacks.saliency_writer import SaliencyWriter, read_records

__all__ = ["PerSampleWriter", "SaliencyWriter", "read_records", "records_to_frame"]
