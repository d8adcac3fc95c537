"""Fake Ascend apex: `apex.amp` and `apex.optimizers` record their calls in `apex.CALLS`."""
CALLS = []
