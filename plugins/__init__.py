"""framelens's built-in plugins. Each module uses only the public ``framelens`` API,
exactly as a third-party plugin would, and is registered through the ``framelens``
entry-point group."""
