"""One interface, several clouds: `platforms.interface.images_for(platform)`; local and aws behind it."""
