"""Lightning callbacks of cam-bench."""
from callbacks.per_sample_writer import PerSampleWriter, records_to_frame
from callbacks.saliency_writer import SaliencyWriter, read_records
from callbacks.stop_on_signal import EXIT_INTERRUPTED, RunInterrupted, StopOnSignal

__all__ = ["EXIT_INTERRUPTED", "PerSampleWriter", "RunInterrupted", "SaliencyWriter", "StopOnSignal", "read_records",
           "records_to_frame"]
