"""The decision engine: the seed's decision rule, the accuracy-aware search, mixed precision,
calibration-sensitivity checks (see ``lowbit recommend | auto | calib-check``)."""
