"""Image building, testing and publishing with the Docker SDK (no shelling out to docker)."""
