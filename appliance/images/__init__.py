"""kpc images."""
