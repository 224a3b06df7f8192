"""Live views: realtime figures read from the database, and streams fed by the processors' updates."""
