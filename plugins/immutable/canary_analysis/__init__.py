"""The parts of the canary judge; import them from `immutable.analysis`."""
