"""A chat demo of PushUp: an aiohttp application behind `pushup serve --upstream`."""
