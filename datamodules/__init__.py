"""LightningDataModules of cam-bench."""
