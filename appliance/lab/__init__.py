"""kpc lab."""
