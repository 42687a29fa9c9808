"""kpc kolla."""
