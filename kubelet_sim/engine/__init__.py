"""The pull engine: the kubelet's image manager (``EnsureImageExists``), its pullers, throttle and
backoff, over the registry client and the local store."""
