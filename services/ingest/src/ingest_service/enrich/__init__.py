"""What the server derives from a request: device, bot flag, channel, client address, visitor id."""
