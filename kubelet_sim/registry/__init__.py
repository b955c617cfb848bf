"""Async OCI distribution client: transport, auth, manifests, blobs, hosts configuration, push."""
