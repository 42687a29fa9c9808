"""I/O drivers: the only modules that import subprocess, python-on-whales, pyghmi or paramiko."""
