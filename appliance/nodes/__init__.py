"""kpc nodes."""
