"""kpc install."""
