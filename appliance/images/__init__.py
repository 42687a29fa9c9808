"""kpc's container images: the catalog under containers/, BuildKit builds, the base image."""
