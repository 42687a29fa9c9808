"""kpc services."""
