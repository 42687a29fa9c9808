"""The live web view of the rack (``kpc web``): aiohttp + Jinja2, updates over SSE."""
