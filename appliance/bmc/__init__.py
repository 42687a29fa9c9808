"""BMC discovery (UDP 623), power and boot control, and the BMC simulator."""
