"""One module per agent: each registers its agents, tables and timers on the app, and holds only that wiring."""
