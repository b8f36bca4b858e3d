"""Chat rooms published to PushUp from FastAPI, with subscriber tokens (the application
is `app.py`)."""
