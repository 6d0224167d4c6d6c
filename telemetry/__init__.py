"""Device side: durable prediction buffer and the sync service that sends it home."""
