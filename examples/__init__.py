"""Applications built on PushUp, each runnable (`python -m examples.<name>...`) and
tested in tests/."""
