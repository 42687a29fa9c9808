"""kpc: a deploy-host appliance that PXE-boots bare metal into Flatcar and drives Kolla."""

__version__ = "0.1.0"
