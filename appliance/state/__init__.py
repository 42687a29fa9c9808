"""The machine registry: what kpc knows about every machine it has seen."""
