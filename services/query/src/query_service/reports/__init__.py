"""One module per report; each owns its SQL."""
