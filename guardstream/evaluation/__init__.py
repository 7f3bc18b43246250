"""How well the guard judges, measured against labelled data: `guardstream eval`."""
