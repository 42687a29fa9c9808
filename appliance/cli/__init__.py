"""The CLI layer: the only code that reads flags and the environment, prints, and exits."""
