"""The app's modes (top-level screens) and its modal screens."""
