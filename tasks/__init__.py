"""Stage logic of the digit-recognizer pipeline: one module per DVC stage plus shared helpers."""
