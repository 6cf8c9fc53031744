"""Neural building blocks: modal encoders, the shared encoder, heads."""
