"""Pure renderers: text in, text out. No I/O."""
