"""One module per experiment: what it trains, with which presets, and what it logs."""
