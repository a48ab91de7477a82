"""One module per experiment: figures built only from what the tracking store holds."""
