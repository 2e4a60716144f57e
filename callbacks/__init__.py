"""Lightning callbacks of cam-bench."""
