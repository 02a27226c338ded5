"""Chat with any base model and adapter: engine (sessions, streaming, stats), model cache with
adapter swapping, reasoning split/ban, and the workspace chat log."""
