"""Store implementations: the interface, the in-memory reference, thread-safe, HTTP and IPC access."""
