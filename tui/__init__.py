"""The clara workbench: a Textual app over the `clara` library (it never re-implements it)."""
