"""`pushup bench`: the paper's evaluation, run against PushUp and reference servers."""
