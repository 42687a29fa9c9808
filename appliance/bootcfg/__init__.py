"""kpc bootcfg."""
