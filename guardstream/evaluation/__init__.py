"""How well the guard judges, measured against labelled data (`guardstream eval`): on the engine, or
through a running deployment."""
