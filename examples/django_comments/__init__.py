"""Comments on articles, published to PushUp from Django once they are committed: the
application in `app.py`, its model in `models.py`."""
